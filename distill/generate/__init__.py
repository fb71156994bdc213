"""Stage 1, teacher generation: R1 prompt rules (prompts), teacher backends (backends), trace parsing (traces), the stage (run)."""
