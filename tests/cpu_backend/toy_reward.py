"""Toy verl reward for the CPU e2e tests: the fraction of vowels in the response, a graded score in [0, 1].

A random tiny model almost never earns the real reward, so every GRPO advantage would be 0 and no weight would
change; this score varies within every group, so the actor really updates and the weight-sync check can fail.
"""


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    vowels = sum(character in "aeiou" for character in solution_str)
    return vowels / max(1, len(solution_str))
