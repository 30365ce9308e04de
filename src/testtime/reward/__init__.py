"""Reward models (process verifiers): score every step of many solutions in one batched call."""

from testtime.reward.arith_check import ArithCheck, check_step, evaluate, extract_statements
from testtime.reward.base import RewardModel

__all__ = ["ArithCheck", "RewardModel", "check_step", "evaluate", "extract_statements"]
