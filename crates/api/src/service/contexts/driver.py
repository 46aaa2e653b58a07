# brig's code-context driver: a Python interpreter kept alive in a sandbox.
# Reads one JSON request per line on stdin ({"seq", "code"}), runs the code in
# one namespace that persists between requests, and answers one JSON line on
# stdout: {"seq", "stdout", "stderr", "result", "error"}, where result is the
# repr of a last expression and error {"name", "message", "traceback"}.
# SIGINT interrupts a running cell (KeyboardInterrupt) and is ignored between
# cells, so an interrupt never ends the context. Standard library only.
import ast, contextlib, io, json, os, signal, sys, traceback

CAP = 256 * 1024
# Answers go to a descriptor of their own; fd 1 (what subprocesses of a cell
# inherit) goes where fd 2 does, so nothing else lands in the answers.
out = os.fdopen(os.dup(1), "w", encoding="utf-8")
os.dup2(2, 1)
namespace = {"__name__": "__main__", "__builtins__": __builtins__}
running = False


def interrupt(signum, frame):
    if running:
        raise KeyboardInterrupt


signal.signal(signal.SIGINT, interrupt)


def run(code):
    tree = ast.parse(code, "<cell>", "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, "<cell>", "exec"), namespace)
    if last is not None:
        value = eval(compile(last, "<cell>", "eval"), namespace)
        if value is not None:
            return repr(value)
    return None


for line in sys.stdin:
    try:
        request = json.loads(line)
    except ValueError:
        continue
    stdout, stderr = io.StringIO(), io.StringIO()
    result = error = None
    try:
        running = True
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            result = run(request.get("code", ""))
    except BaseException as exc:
        error = {
            "name": type(exc).__name__,
            "message": str(exc)[:CAP],
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-CAP:],
        }
    finally:
        running = False
    answer = {
        "seq": request.get("seq"),
        "stdout": stdout.getvalue()[:CAP],
        "stderr": stderr.getvalue()[:CAP],
        "result": result[:CAP] if result is not None else None,
        "error": error,
    }
    out.write(json.dumps(answer, ensure_ascii=False) + "\n")
    out.flush()
