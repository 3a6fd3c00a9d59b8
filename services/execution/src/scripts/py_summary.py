# Runs inside the sandbox: parses /box/code.py (untrusted) and prints one JSON object.
# Output: {"functions", "classes", "imports", "complexity"} or {"syntax_error": {...}}.
import ast
import json
import sys

DECISIONS = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.IfExp, ast.ExceptHandler,
             ast.Assert, ast.comprehension)
if hasattr(ast, "match_case"):
    DECISIONS = DECISIONS + (ast.match_case,)
SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def complexity(func):
    """McCabe complexity: 1 + decision points, not counting nested functions or classes."""
    score = 1
    stack = list(ast.iter_child_nodes(func))
    while stack:
        node = stack.pop()
        if isinstance(node, SCOPES):
            continue
        if isinstance(node, DECISIONS):
            score += 1
            if isinstance(node, ast.comprehension):
                score += len(node.ifs)
        elif isinstance(node, ast.BoolOp):
            score += len(node.values) - 1
        elif isinstance(node, (ast.Try,) + ((ast.TryStar,) if hasattr(ast, "TryStar") else ())):
            score += 1 if node.orelse else 0
        stack.extend(ast.iter_child_nodes(node))
    return score


def main():
    source = open("/box/code.py", encoding="utf-8").read()
    try:
        tree = ast.parse(source, filename="code.py")
    except SyntaxError as e:
        print(json.dumps({"syntax_error": {
            "line": e.lineno or 1, "column": e.offset or 1, "message": e.msg}}))
        return
    except (ValueError, RecursionError, MemoryError) as e:
        print(json.dumps({"syntax_error": {"line": 1, "column": 1, "message": str(e)[:500]}}))
        return
    functions, classes, imports, funcs = set(), set(), set(), []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.add(child.name)
                name = prefix + child.name
                funcs.append({"name": name, "complexity": complexity(child), "line": child.lineno,
                              "is_async": isinstance(child, ast.AsyncFunctionDef)})
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                classes.add(child.name)
                visit(child, prefix + child.name + ".")
            else:
                if isinstance(child, ast.Import):
                    imports.update(a.name.split(".")[0] for a in child.names)
                elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                    imports.add(child.module.split(".")[0])
                visit(child, prefix)

    sys.setrecursionlimit(10000)
    try:
        visit(tree, "")
    except RecursionError:
        print(json.dumps({"syntax_error": {"line": 1, "column": 1, "message": "code nests too deeply"}}))
        return
    print(json.dumps({"functions": sorted(functions), "classes": sorted(classes),
                      "imports": sorted(imports), "complexity": funcs}))


main()
