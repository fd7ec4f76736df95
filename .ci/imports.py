#!/usr/bin/env python3
"""Import graph of the crate's modules, from the `crate::` and `super::` paths in src/ (not a
Rust parser: paths in comments and strings count too, which errs towards reporting an edge).

Usage: .ci/imports.py [--cycles] [--edges] [--folders] [--layers]
  --cycles  print every cycle (strongly connected set of files) and exit 1 if there is one
  --edges   print every edge, file -> file
  --folders the same between the top-level units of src/ (a folder, or a file beside them)
  --layers  print every edge from a lower layer of LAYERS to a higher one and exit 1 if there is
            one (a unit of src/ that LAYERS does not name is an error too)
Modules compiled for tests only (declared under #[cfg(test)]) are left out: test code may
reach anywhere.
Issue 17 wants no cycle between files or folders of src/ and no edge from a lower layer to a
higher one; CI runs `--cycles`."""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
PATH = re.compile(r"\b(crate|super)((?:::[a-z_][a-z0-9_]*)+)")
GROUP = re.compile(r"\b(crate|super)((?:::[a-z_][a-z0-9_]*)*)::\{([^}]*)\}", re.S)


def modules():
    """Module path (tuple) -> file."""
    out = {}
    for dirpath, _, files in os.walk(ROOT):
        for name in files:
            # main.rs is the binary, a crate of its own that uses this one by name.
            if not name.endswith(".rs") or (dirpath == ROOT and name == "main.rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), ROOT)[:-3].split(os.sep)
            if rel[-1] in ("mod", "lib", "main"):
                rel = rel[:-1]
            out[tuple(rel)] = os.path.join(dirpath, name)
    return out


# Macros exported at the crate root (`#[macro_export]`), by the module that defines them.
MACROS = {"with_format": ("repo", "format")}


def resolve(mods, path):
    """The longest module prefix of `path`."""
    for n in range(len(path), 0, -1):
        if tuple(path[:n]) in mods:
            return tuple(path[:n])
    return None


TEST_ONLY = re.compile(r"#\[cfg\(test\)\]\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;")


def test_only(mods):
    """Modules declared `#[cfg(test)] mod name;` in their parent's file, and everything below."""
    out = set()
    for module, file in mods.items():
        text = open(file, encoding="utf-8").read()
        for child in TEST_ONLY.findall(text):
            out.add(module + (child,))
    return {m for m in mods if any(m[:len(t)] == t for t in out)}


def folders(graph):
    """The graph between top-level units of src/."""
    out = {}
    for module, targets in graph.items():
        unit = module[:1]
        out.setdefault(unit, set())
        for target in targets:
            if target[:1] != unit:
                out[unit].add(target[:1])
                out.setdefault(target[:1], set())
    return out


# The layers of src/ along the data path, lowest first: a unit may import its own layer and
# the ones below. `testing` is compiled for tests only and left out.
LAYERS = [
    ["util"],
    ["store"],
    ["formats", "caps", "agent"],
    ["repo"],
    ["ingest", "publish"],
    ["releases", "maintenance"],
    ["serve"],
    ["cli"],
    ["lib", "main"],
]


def layer_of(unit):
    name = unit[0] if unit else "lib"
    for level, names in enumerate(LAYERS):
        if name in names:
            return level
    return None


def upward(graph):
    """(from, to) for every edge between top-level units that climbs the layers."""
    out = []
    for module, targets in graph.items():
        for target in targets:
            a, b = layer_of(module[:1]), layer_of(target[:1])
            if a is None or b is None or b > a:
                out.append((module, target))
    return sorted(out)


def edges(mods):
    graph = {m: set() for m in mods}
    for module, file in mods.items():
        text = open(file, encoding="utf-8").read()
        # A file's own `mod tests` and the crate root's declarations are not dependencies.
        text = text.split("#[cfg(test)]\nmod tests")[0]
        found = []
        for root, rest, group in GROUP.findall(text):
            for item in group.split(","):
                item = item.strip().split(" as ")[0]
                if item and item != "self":
                    found.append(base_path(root, module) + rest.strip(":").split("::") + item.split("::"))
        for root, rest in PATH.findall(text):
            found.append(base_path(root, module) + rest.strip(":").split("::"))
        # Macros exported at the crate root expand to paths of the module defining them.
        for macro, home in MACROS.items():
            if re.search(r"\b" + macro + r"!", text) and module != home:
                found.append(list(home))
        for path in found:
            path = [p for p in path if p]
            target = resolve(mods, path)
            if target is not None and target != module and target != ():
                graph[module].add(target)
    return graph


def base_path(root, module):
    """Where `crate::` or `super::` starts from in `module`: `super` in a/b.rs is a, and in
    a/mod.rs (module a) the crate root, so both are the module's parent."""
    if root == "crate":
        return []
    return list(module[:-1])


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def name(module):
    return "::".join(module) or "crate"


def main():
    mods = modules()
    for module in test_only(mods):
        del mods[module]
    graph = edges(mods)
    if "--layers" in sys.argv:
        climbing = upward(graph)
        for module, target in climbing:
            print(f"{name(module)} -> {name(target)}: imports from a higher layer (see LAYERS)")
        if climbing:
            sys.exit(1)
    if "--folders" in sys.argv:
        graph = folders(graph)
    if "--edges" in sys.argv:
        for module in sorted(graph):
            for target in sorted(graph[module]):
                print(f"{name(module)} -> {name(target)}")
    found = cycles(graph)
    for component in found:
        print(f"cycle of {len(component)} modules: " + ", ".join(name(m) for m in component))
    if "--cycles" in sys.argv and found:
        sys.exit(1)


main()
