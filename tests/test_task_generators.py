"""The task generators: deterministic, correct answers, the right levels, and checks that judge fairly.

Correctness is tested against independent code (brute force, a separate BFS), not the generators' own.
"""

from __future__ import annotations

import itertools
import random
from functools import cache

import pytest

from reasonlab.errors import UserError
from reasonlab.tasks.base import Example, Task
from reasonlab.tasks.maze import Maze, bfs
from reasonlab.tasks.registry import TASKS, get_task
from reasonlab.tasks.sudoku import BOXES, Sudoku, solve

SETUPS = [("addition", 0), ("parity", 0), ("prefix-sum", 0),
          ("sudoku", 4), ("sudoku", 6), ("sudoku", 9), ("maze", 5), ("maze", 8)]


def draw(task: Task, seed: int, count: int, split: int = 0) -> list[Example]:
    """`count` examples at levels spread over one of the default ranges (0 = train, 1 = test)."""
    rng = random.Random(seed)
    low, high = task.default_levels()[split]
    return [task.sample(rng, rng.randint(low, high)) for _ in range(count)]


@pytest.mark.parametrize("name,size", SETUPS)
def test_same_seed_same_examples(name: str, size: int) -> None:
    task = get_task(name, size)
    assert draw(task, 0, 8) == draw(task, 0, 8)
    assert draw(task, 0, 8) != draw(task, 1, 8)


@pytest.mark.parametrize("name,size", SETUPS)
def test_tokens_in_vocab_and_answers_checked(name: str, size: int) -> None:
    task = get_task(name, size)
    vocab = set(task.vocab())
    assert len(vocab) == len(task.vocab())
    for split in (0, 1):
        for e in draw(task, 2, 10, split):
            assert set(e.prompt) <= vocab and set(e.answer) <= vocab
            assert not task.aligned or len(e.prompt) == len(e.answer)
            assert task.check(e, e.answer)
            assert task.render(e.prompt) and task.render(e.answer)


@pytest.mark.parametrize("name,size", SETUPS)
def test_check_rejects_a_corrupted_answer(name: str, size: int) -> None:
    task = get_task(name, size)
    rng = random.Random(3)
    for e in draw(task, 3, 10):
        i = rng.randrange(len(e.answer))
        wrong = rng.choice([t for t in task.vocab() if t != e.answer[i]])
        assert not task.check(e, e.answer[:i] + (wrong,) + e.answer[i + 1 :])
        assert not task.check(e, e.answer[:-1])


@pytest.mark.parametrize("name,size", SETUPS)
def test_levels_out_of_bounds_are_user_errors(name: str, size: int) -> None:
    task = get_task(name, size)
    low, high = task.level_bounds()
    (train_lo, train_hi), (test_lo, test_hi) = task.default_levels()
    assert low <= train_lo <= train_hi < test_lo <= test_hi <= high
    for level in (low - 1, high + 1):
        with pytest.raises(UserError, match="level"):
            task.sample(random.Random(0), level)
    assert task.sample(random.Random(0), low).level == low
    assert task.sample(random.Random(0), high).level == high


def test_registry_and_bad_knobs() -> None:
    assert set(TASKS) == {"addition", "parity", "prefix-sum", "sudoku", "maze"}
    assert all(get_task(name).name == name for name in TASKS)
    with pytest.raises(UserError, match="unknown task 'sodoku'"):
        get_task("sodoku")
    with pytest.raises(UserError, match="size"):
        get_task("sudoku", size=5)
    for size in (4, 33):
        with pytest.raises(UserError, match="size"):
            get_task("maze", size=size)
    assert get_task("sudoku").size == 4 and get_task("maze").size == 8


def number(digits: tuple[str, ...], reverse: bool) -> int:
    return int("".join(reversed(digits) if reverse else digits))


@pytest.mark.parametrize("reverse", [True, False])
def test_addition_sums(reverse: bool) -> None:
    task = get_task("addition", reverse=reverse)
    rng = random.Random(0)
    for level in range(1, 25):
        for _ in range(3):
            e = task.sample(rng, level)
            plus = e.prompt.index("+")
            a, b = e.prompt[:plus], e.prompt[plus + 1 :]
            assert len(a) == len(b) == level and len(e.answer) == level + 1
            assert level == 1 or "0" not in (a[-1] if reverse else a[0], b[-1] if reverse else b[0])
            assert number(e.answer, reverse) == number(a, reverse) + number(b, reverse)
    mirrored = get_task("addition", reverse=not reverse)
    assert task.sample(random.Random(0), 3).prompt != mirrored.sample(random.Random(0), 3).prompt


def test_parity_and_prefix_sum() -> None:
    parity, prefix = get_task("parity"), get_task("prefix-sum")
    for e in draw(parity, 0, 20, 1):
        bits = [int(b) for b in e.prompt]
        assert len(bits) == e.level
        assert e.answer == tuple(str(sum(bits[: i + 1]) % 2) for i in range(len(bits)))
    for e in draw(prefix, 0, 20, 1):
        bits = [int(b) for b in e.prompt]
        assert e.answer == tuple(str(sum(bits[: i + 1])) for i in range(len(bits)))
    assert set(prefix.vocab()) >= {"0", "1", "64"}


def units(size: int) -> list[list[int]]:
    box_rows, box_cols = BOXES[size]
    rows = [[r * size + c for c in range(size)] for r in range(size)]
    cols = [[r * size + c for r in range(size)] for c in range(size)]
    boxes = [[(r0 + r) * size + c0 + c for r in range(box_rows) for c in range(box_cols)]
             for r0 in range(0, size, box_rows) for c0 in range(0, size, box_cols)]
    return rows + cols + boxes


def valid(grid: tuple[int, ...], size: int) -> bool:
    return all(sorted(grid[i] for i in unit) == list(range(1, size + 1)) for unit in units(size))


def no_repeats(rows: tuple[int, ...], size: int) -> bool:
    """No digit twice in any unit, over the rows filled so far."""
    filled = ([rows[i] for i in unit if i < len(rows)] for unit in units(size))
    return all(len(set(seen)) == len(seen) for seen in filled)


@cache
def all_4x4_grids() -> list[tuple[int, ...]]:
    """Every valid 4x4 grid, built row by row from permutations."""
    grids: list[tuple[int, ...]] = [()]
    for _ in range(4):
        grids = [g + row for g in grids for row in itertools.permutations(range(1, 5)) if no_repeats(g + row, 4)]
    return grids


@pytest.mark.parametrize("size", [4, 6, 9])
def test_sudoku_puzzles_are_unique_and_rated_by_the_solver(size: int) -> None:
    task = Sudoku(size)
    for e in draw(task, 4, 6) + draw(task, 4, 6, 1):
        puzzle = [0 if t == "." else int(t) for t in e.prompt]
        solution = tuple(int(t) for t in e.answer)
        assert puzzle.count(0) == e.level
        assert valid(solution, size)
        assert all(p in (0, s) for p, s in zip(puzzle, solution))
        solutions, search = solve(puzzle, size)
        assert solutions == [solution] and e.difficulty == search


def test_4x4_uniqueness_by_brute_force() -> None:
    grids = all_4x4_grids()
    assert len(grids) == 288 and all(valid(g, 4) for g in grids)
    task = Sudoku(4)
    for e in draw(task, 5, 30, 1):
        fits = [g for g in grids if all(t == "." or int(t) == v for t, v in zip(e.prompt, g))]
        assert fits == [tuple(int(t) for t in e.answer)]


def test_solver_counts_solutions_and_guesses() -> None:
    solutions, search = solve([0] * 16, 4)
    assert len(solutions) == 2 and search >= 1
    assert solve([1, 1] + [0] * 14, 4) == ([], 0)
    assert solve([int(t) for t in Sudoku(4).sample(random.Random(0), 1).answer], 4)[1] == 0


def test_sudoku_min_search() -> None:
    task = Sudoku(9, min_search=2)
    for e in draw(task, 6, 3, 1):
        assert e.difficulty >= 2 and solve([0 if t == "." else int(t) for t in e.prompt], 9)[1] == e.difficulty
    with pytest.raises(UserError, match="12 blanks"):
        Sudoku(4, min_search=100).sample(random.Random(0), 12)


def test_sudoku_check_accepts_any_valid_completion() -> None:
    task = Sudoku(4)
    first, other = (tuple(str(v) for v in g) for g in all_4x4_grids()[:2])
    open_puzzle = Example(("1",) + (".",) * 15, first, 15, 0)
    assert first[0] == other[0] == "1" and first != other
    assert task.check(open_puzzle, first) and task.check(open_puzzle, other)
    rows_only = tuple("1234" * 4)  # every row fine, columns not
    assert not task.check(open_puzzle, rows_only)
    assert task.render(first).splitlines()[2] == "----+----"


def distances(prompt: tuple[str, ...], n: int, start: int) -> dict[int, int]:
    dist, frontier = {start: 0}, [start]
    for cell in frontier:
        r, c = divmod(cell, n)
        for rr, cc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            nb = rr * n + cc
            if 0 <= rr < n and 0 <= cc < n and prompt[nb] != "#" and nb not in dist:
                dist[nb] = dist[cell] + 1
                frontier.append(nb)
    return dist


def adjacent(a: int, b: int, n: int) -> bool:
    (ra, ca), (rb, cb) = divmod(a, n), divmod(b, n)
    return abs(ra - rb) + abs(ca - cb) == 1


@pytest.mark.parametrize("size", [5, 8, 13])
def test_maze_paths_are_legal_and_shortest(size: int) -> None:
    task = Maze(size)
    for e in draw(task, 7, 10) + draw(task, 7, 10, 1):
        assert e.prompt.count("S") == e.prompt.count("E") == 1 and "o" not in e.prompt
        start, end = e.prompt.index("S"), e.prompt.index("E")
        assert distances(e.prompt, size, start)[end] == e.level
        changed = [i for i, (p, a) in enumerate(zip(e.prompt, e.answer)) if p != a]
        assert all(e.prompt[i] == "." and e.answer[i] == "o" for i in changed)
        assert len(changed) == e.level - 1
        walk, left = [start], set(changed)
        while left:  # each step must go to exactly one unvisited path cell next to the last
            (nxt,) = [i for i in left if adjacent(walk[-1], i, size)]
            walk.append(nxt)
            left.remove(nxt)
        assert adjacent(walk[-1], end, size)


def test_maze_check_accepts_another_shortest_path() -> None:
    task = Maze(8)
    rng = random.Random(8)
    found = 0
    for _ in range(200):
        e = task.sample(rng, 12)
        start, end = e.prompt.index("S"), e.prompt.index("E")
        from_start, from_end = distances(e.prompt, 8, start), distances(e.prompt, 8, end)
        on_some = {i for i in from_start if from_start[i] + from_end.get(i, 10**9) == e.level}
        if len(on_some) == e.level + 1:
            continue
        cell, other = start, list(e.prompt)
        for step in range(1, e.level):  # the last (not the first) fitting neighbour, as a different walk
            cell = max(i for i in on_some if from_start[i] == step and adjacent(cell, i, 8))
            other[cell] = "o"
        if tuple(other) != e.answer:
            assert task.check(e, tuple(other))
            found += 1
    assert found >= 3
    detour = list(e.answer)
    detour[next(i for i, t in enumerate(e.prompt) if t == "." and e.answer[i] == ".")] = "o"
    assert not task.check(e, tuple(detour))
    assert len(task.render(e.prompt).splitlines()) == 8


def test_30x30_mazes_reach_maze_hards_path_lengths_and_easier_levels_are_unchanged():
    """Past a random start's reach (102 at 30x30) the start is one end of a longest path, so the
    generator reaches Maze-Hard's bar of 110 and beyond; the levels below draw as they always did."""
    task, rng = get_task("maze", 30), random.Random(0)
    assert task.level_bounds() == (2, 139) and task.default_levels() == ((4, 61), (62, 102))
    for level in (110, 125, 139):
        example = task.sample(rng, level)
        start, end = example.prompt.index("S"), example.prompt.index("E")
        assert bfs(example.prompt, 30, start)[0][end] == level and task.check(example, example.answer)
    assert task.sample(random.Random(5), 40).key == "7a86a67109d41bd128e625851245fb1c93ffa540"  # as before
    assert get_task("maze", 8).sample(random.Random(5), 12).key == "4c4827f6bc6b8493bb20a2c40b4a0e89973d8de3"
