"""Stage 5: evaluate the student — pass@1 over k samples and cons@k on the recipe's benchmarks."""
