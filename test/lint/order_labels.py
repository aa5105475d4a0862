#!/usr/bin/python3
"""Checks vbus's memory-ordering labels.

Every atomic operation with acquire, release, acq_rel or seq_cst order carries a label of its
own component, such as [CT-D1], on its line or in the comment just above it (up to three lines),
and names what it pairs with there (labels of other components may be mentioned alongside). A label's prefix belongs to one component, listed in order_label_prefixes.txt with
the files that may define labels of it; no two components share a prefix, so a label means the
same thing everywhere in the project. Every label mentioned anywhere (e.g. "pairs with [RB-W2]")
must be defined somewhere.

Usage: order_labels.py <repository root>
"""
import os
import re
import sys

LABEL = re.compile(r"\[([A-Z][A-Z0-9]*)-([A-Z]*[0-9]+)\]")
ORDER = re.compile(r"memory_order_(acquire|release|acq_rel|seq_cst)")
SOURCE_DIRS = ("core", "backends", "mock", "test", "hyperv", "drivers", "examples")
WINDOW = 3


def sources(root):
    for top in SOURCE_DIRS:
        base = os.path.join(root, top)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d != "corpus"]
            for name in filenames:
                if name.endswith((".h", ".cc")):
                    path = os.path.join(dirpath, name)
                    yield os.path.relpath(path, root)


def main(root):
    registry = {}
    with open(os.path.join(root, "test/lint/order_label_prefixes.txt")) as f:
        for line in f:
            line = line.split("#", 1)[0].split()
            if not line:
                continue
            prefix, files = line[0], line[1:]
            if prefix in registry:
                print(f"order_label_prefixes.txt: prefix {prefix} listed twice")
                return 1
            registry[prefix] = set(files)

    problems = []
    defined = {}  # label -> file
    mentioned = []  # (file, line, label)
    for path in sources(root):
        with open(os.path.join(root, path), errors="replace") as f:
            lines = f.read().split("\n")
        for i, text in enumerate(lines):
            for m in LABEL.finditer(text):
                mentioned.append((path, i + 1, m.group(0)))
            if not ORDER.search(text):
                continue
            window = lines[max(0, i - WINDOW) : i + 1]
            labels = [m for w in window for m in LABEL.finditer(w)]
            own = [m for m in labels if path in registry.get(m.group(1), ())]
            if not own:
                unknown = sorted({m.group(1) for m in labels if m.group(1) not in registry})
                hint = (f" (prefix {', '.join(unknown)} is not in test/lint/order_label_prefixes.txt)"
                        if unknown else "")
                problems.append(f"{path}:{i + 1}: {ORDER.search(text).group(0)} without a label of "
                                f"its own component{hint}: add one naming what it pairs with")
                continue
            for m in own:
                defined.setdefault(m.group(0), path)
    for path, line, label in mentioned:
        if label not in defined:
            problems.append(f"{path}:{line}: {label} is mentioned but labels no atomic operation")
    for p in problems:
        print(p)
    print(f"{len(defined)} labels defined, {len(mentioned)} mentions, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
