"""`umcp mcp` (MCP over stdio) with the official MCP Python SDK (1.x) as the client.

Run by scripts/e2e-mcp.sh against the mesh started from the built binaries, which passes:
  UMCP_BIN            the `umcp` binary
  UMCP_ENDPOINT       the gateway's gRPC address
  UMCP_ADMIN_CONFIG   a config dir holding an admin's stored login (`umcp login`)
  UMCP_VIEWER_CONFIG  a config dir holding a viewer's stored login
The SDK launches `umcp mcp` as a process, as desktop MCP clients do; every step asserts what it
sees and the first failure exits non-zero naming the step.
"""

import asyncio
import contextlib
import os
import sys
import time
import uuid

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import McpError

RUN = uuid.uuid4().hex[:8]


def check(condition, what):
    if not condition:
        sys.exit(f"FAIL: {what}")
    print(f"ok: {what.split(':')[0]}")


@contextlib.asynccontextmanager
async def bridge(config_dir):
    env = {"PATH": os.environ.get("PATH", ""), "UMCP_CONFIG_DIR": config_dir,
           "UMCP_ENDPOINT": os.environ["UMCP_ENDPOINT"]}
    params = StdioServerParameters(command=os.environ["UMCP_BIN"], args=["mcp"], env=env)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            info = await session.initialize()
            check(info.serverInfo.name == "umcp-gateway", f"initialized over stdio: {info.serverInfo}")
            yield session


async def admin():
    async with bridge(os.environ["UMCP_ADMIN_CONFIG"]) as s:
        tools = {t.name: t for t in (await s.list_tools()).tools}
        check(len(tools) == 11, f"admin sees every tool over stdio: {sorted(tools)}")
        check(tools["execute_code"].inputSchema["properties"]["language"]["enum"]
              == ["python", "javascript", "bash"], "execute_code schema over stdio")
        progress = []

        async def on_progress(value, total, message):
            progress.append(message)

        result = await s.call_tool("execute_code", {"language": "bash", "code": "echo one; sleep 0.2; echo two"},
                                   progress_callback=on_progress)
        out = result.structuredContent
        check(not result.isError and out["stdout"] == "one\ntwo\n", f"execute_code over stdio: {out}")
        check(any("one" in (m or "") for m in progress), f"progress over stdio: {progress}")
        key = f"stdio_{RUN}"
        upsert = await s.call_tool("graph_upsert", {"nodes": [{"key": key, "labels": ["Stdio"],
                                                               "properties": {"n": 3}}]})
        check(upsert.structuredContent["nodes_created"] == 1, f"graph_upsert over stdio: {upsert}")
        query = await s.call_tool("graph_query", {"cypher": "MATCH (n:Stdio {key: $k}) RETURN n.n AS n",
                                                  "parameters": {"k": key}})
        check(query.structuredContent["rows"] == [[3]], f"graph_query over stdio: {query}")
        try:
            await s.call_tool("graph_query", {"cypher": "RETURN 1", "row_limit": 0})
            invalid = None
        except McpError as e:
            invalid = e.error
        check(invalid is not None and invalid.code == -32602 and "`row_limit`" in invalid.message,
              f"INVALID_PARAMS over stdio: {invalid}")


async def viewer():
    async with bridge(os.environ["UMCP_VIEWER_CONFIG"]) as s:
        names = sorted(t.name for t in (await s.list_tools()).tools)
        check("execute_code" not in names and "lint_code" in names, f"viewer's tools over stdio: {names}")
        result = await s.call_tool("execute_code", {"language": "python", "code": "print(1)"})
        error = (result.structuredContent or {}).get("error", {})
        check(result.isError and error.get("code") == "PERMISSION_DENIED",
              f"viewer's execute_code refused over stdio: {result}")
        return result.structuredContent["correlation_id"]


async def audited(correlation):
    deadline = time.monotonic() + 10
    async with bridge(os.environ["UMCP_ADMIN_CONFIG"]) as s:
        while True:
            result = await s.call_tool("audit_query", {"correlation_id": correlation,
                                                       "event_types": ["authz_denied"]})
            events = result.structuredContent["events"]
            if events or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    check(len(events) == 1 and events[0]["actor"]["roles"] == ["viewer"],
          f"the denial is audited with its correlation id: {events}")


async def main():
    await admin()
    correlation = await viewer()
    await audited(correlation)
    print("all MCP stdio checks passed")


asyncio.run(main())
