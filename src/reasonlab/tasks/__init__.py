"""Generated reasoning tasks (addition, parity, prefix-sum, sudoku, maze) and how models are scored on them."""
