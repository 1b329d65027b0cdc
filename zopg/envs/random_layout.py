"""Random GridWorld layouts from a seed: held-out layouts to tune on, never the evaluation ones."""

from __future__ import annotations

from collections import deque

import numpy as np

from zopg.errors import ConfigError, checked_int


def random_layout(seed: int, height: int = 5, width: int = 5, traps: int = 2) -> tuple[str, ...]:
    """S and G on random cells at least half the grid's span apart, `traps` traps elsewhere;
    redrawn until G is reachable from S around the traps, so every layout can be solved."""
    seed = checked_int("seed", seed, 0)
    height = checked_int("height", height, 2, 20)
    width = checked_int("width", width, 2, 20)
    traps = checked_int("traps", traps, 0, height * width - 2)
    rng = np.random.default_rng(seed)
    cells = height * width
    for _ in range(1000):
        order = rng.permutation(cells)
        start, goal = divmod(int(order[0]), width), divmod(int(order[1]), width)
        if abs(start[0] - goal[0]) + abs(start[1] - goal[1]) < (height + width - 2) / 2:
            continue
        grid = [["."] * width for _ in range(height)]
        grid[start[0]][start[1]], grid[goal[0]][goal[1]] = "S", "G"
        for cell in order[2 : 2 + traps]:
            row, col = divmod(int(cell), width)
            grid[row][col] = "X"
        if _reachable(grid, start, goal):
            return tuple("".join(row) for row in grid)
    raise ConfigError(
        f"gridworld/random: no solvable layout with {traps} traps on {height} x {width} "
        f"(seed {seed}) in 1000 draws; use fewer traps"
    )


def _reachable(grid, start, goal) -> bool:
    """Breadth-first search over non-trap cells (a trap ends the episode)."""
    height, width = len(grid), len(grid[0])
    seen, queue = {start}, deque([start])
    while queue:
        row, col = queue.popleft()
        if (row, col) == goal:
            return True
        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            r, c = row + dr, col + dc
            if 0 <= r < height and 0 <= c < width and (r, c) not in seen and grid[r][c] != "X":
                seen.add((r, c))
                queue.append((r, c))
    return False
