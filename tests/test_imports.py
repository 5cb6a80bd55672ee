"""Imports run one way: experiments -> run/bench -> serving/evaluation/export -> train -> model/
losses/data/index -> kernels, sharding, types; `kernels/` imports nothing from `unipinrec`."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("unipinrec", "kernels", "experiments")
# Bottom to top: a module may import its own layer or lower ones, never a higher one.
LAYERS = (
  (
    "kernels",
    "unipinrec.types",
    "unipinrec.sharding",
    "unipinrec.records",
    "unipinrec.errors",
    "unipinrec.versions",
    "unipinrec.hashing",
  ),
  (
    "unipinrec.model",
    "unipinrec.losses",
    "unipinrec.positives",
    "unipinrec.history_loss",
    "unipinrec.data",
    "unipinrec.index",
  ),
  ("unipinrec.train", "unipinrec.checkpoint", "unipinrec.config", "unipinrec.workdir_lock"),
  ("unipinrec.evaluation", "unipinrec.export", "unipinrec.serving"),
  ("unipinrec.run", "unipinrec.bench"),
  ("experiments",),
)
MAX_LINES = 400


def _modules() -> dict[str, pathlib.Path]:
  modules = {}
  for package in PACKAGES:
    for path in sorted((ROOT / package).rglob("*.py")):
      parts = path.relative_to(ROOT).with_suffix("").parts
      name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
      if name != "unipinrec":  # the package's empty __init__ belongs to no layer
        modules[name] = path
  return modules


def _imports(path: pathlib.Path, known: set[str]) -> set[str]:
  """The project modules `path` imports (anywhere in the file), by their module names."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names = [f"{node.module}.{alias.name}" for alias in node.names]
    else:
      continue
    for name in names:
      while name and name not in known:
        name = name.rpartition(".")[0]
      if name:
        found.add(name)
  return found


def _layer(module: str) -> tuple[int, str]:
  for index, layer in enumerate(LAYERS):
    for unit in layer:
      if module == unit or module.startswith(unit + "."):
        return index, unit
  raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  known = set(modules)
  return {name: _imports(path, known) - {name} for name, path in modules.items()}


GRAPH = _graph()


def test_every_module_has_a_layer():
  for module in GRAPH:
    _layer(module)


def test_no_import_from_a_lower_layer_to_a_higher_one():
  upward = []
  for module, imported in GRAPH.items():
    for target in imported:
      if _layer(target)[0] > _layer(module)[0]:
        upward.append(f"{module} -> {target}")
  assert not upward, "imports against the layers:\n" + "\n".join(sorted(upward))


def test_kernels_import_nothing_from_the_library():
  outside = {
    f"{m} -> {t}"
    for m, imported in GRAPH.items()
    if m.startswith("kernels")
    for t in imported
    if not t.startswith("kernels")
  }
  assert not outside


@pytest.mark.parametrize("granularity", ["module", "unit"])
def test_no_import_cycles(granularity):
  """No cycle between modules, nor between the layers' units (unipinrec.train, kernels...)."""
  if granularity == "module":
    graph = GRAPH
  else:
    graph = {}
    for module, imported in GRAPH.items():
      unit = _layer(module)[1]
      graph.setdefault(unit, set()).update(_layer(t)[1] for t in imported)
      graph[unit].discard(unit)
  state = {}

  def visit(node, path):
    state[node] = "open"
    for target in sorted(graph.get(node, ())):
      if state.get(target) == "open":
        cycle = path[path.index(target) :] + [target]
        raise AssertionError("import cycle: " + " -> ".join(cycle))
      if target not in state:
        visit(target, path + [target])
    state[node] = "done"

  for node in sorted(graph):
    if node not in state:
      visit(node, [node])


def test_library_modules_are_at_most_400_lines():
  long = {
    str(path.relative_to(ROOT)): n
    for name, path in _modules().items()
    if name.startswith("unipinrec") and (n := len(path.read_text().splitlines())) > MAX_LINES
  }
  assert not long
