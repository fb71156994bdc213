"""The R1-Distill release spec: the R1 token strings (one place in the package; see also templates/*.jinja)."""

from __future__ import annotations

BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
USER, ASSISTANT, THINK, END_THINK = "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"
THINK_OPEN = THINK + "\n"  # R1's "force the response to begin with <think>\n"
THINK_CLOSE = END_THINK
