"""Helpers shared by the policy, reward and probe backends, one module per inference library.

``hf`` (transformers), ``vllm`` and ``llamacpp``: optional-dependency imports with install hints,
checkpoint loading, fingerprints and log silencers. These modules import nothing else from testtime,
so policy/, reward/ and probe/ can all build on them without depending on each other.
"""
