"""distill: reproduce DeepSeek's R1-Distill recipe (generate -> curate -> train -> patch -> eval -> push)."""

__version__ = "0.1.0"
