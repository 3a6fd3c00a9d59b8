def _umcp_run():
    # The warm pool's loader: started ahead of any request, it blocks on descriptor 3 until
    # the service hands over "code\0arg\0arg...", then runs the code as a cold run would run
    # /box/main.py: same sys.argv, sys.path[0], __name__/__file__, tracebacks and exit codes.
    import os
    import sys

    # Imported before the readiness byte, so their cost is not the caller's.
    import linecache
    import resource

    # Ready: the sandbox reads this byte and only then offers the sandbox to requests.
    os.write(1, b"R")
    chunks = []
    while True:
        chunk = os.read(3, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(3)
    data = b"".join(chunks)
    # The sandbox's first line: the run's rlimits, lowered here before any handed-over code
    # runs (the service may not change another process's limits).
    header, _, data = data.partition(b"\n")
    if not header.startswith(b"UMCP-RLIMITS"):
        os._exit(127)
    for item in header.split()[1:]:
        which, soft, hard = (int(x) for x in item.split(b":"))
        resource.setrlimit(which, (soft, hard))
    del resource
    parts = data.split(b"\0")
    path = "/box/main.py"
    sys.argv = [path] + [a.decode("utf-8", "surrogateescape") for a in parts[1:]]
    sys.path[0] = "/box"
    source = parts[0]
    text = source.decode("utf-8", "replace")
    linecache.cache[path] = (len(text), None, text.splitlines(True), path)
    main = sys.modules["__main__"].__dict__
    keep = ("__name__", "__doc__", "__builtins__", "__loader__", "__spec__", "__package__")
    for name in [k for k in main if k not in keep]:
        del main[name]
    main["__file__"] = path
    main["__cached__"] = None
    try:
        code = compile(source, path, "exec")
    except (SyntaxError, ValueError) as e:
        # As a cold run reports a script that does not compile: no traceback at all.
        e = e.with_traceback(None)
        sys.excepthook(type(e), e, None)
        sys.exit(1)
    try:
        exec(code, main)
    except SystemExit:
        raise
    except BaseException as e:
        # Without this loader's own frame; the source lines come from linecache (the code is
        # not a file here), which the traceback module reads and the C printer does not.
        e = e.with_traceback(e.__traceback__.tb_next if e.__traceback__ else None)
        if sys.excepthook is sys.__excepthook__:
            import traceback

            traceback.print_exception(e)
            sys.stderr.flush()
        else:
            sys.excepthook(type(e), e, e.__traceback__)
        sys.exit(1)


_umcp_run()
