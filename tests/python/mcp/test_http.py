"""MCP over Streamable HTTP with the official MCP Python SDK (1.x) as the client.

Run by the gateway's Rust test `mcp::python` against a real mesh (auth, audit, graph,
execution, gateway and its MCP port), which passes:
  UMCP_MCP_URL       http://127.0.0.1:<port>/mcp
  UMCP_ADMIN_TOKEN   an admin access token
  UMCP_VIEWER_TOKEN  a viewer access token
Every step asserts what it sees; the first failure exits non-zero naming the step.
"""

import asyncio
import contextlib
import os
import sys
import time
import uuid

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError

URL = os.environ["UMCP_MCP_URL"]
ADMIN = os.environ["UMCP_ADMIN_TOKEN"]
VIEWER = os.environ["UMCP_VIEWER_TOKEN"]
RUN = uuid.uuid4().hex[:8]


def check(condition, what):
    if not condition:
        sys.exit(f"FAIL: {what}")
    print(f"ok: {what.split(':')[0]}")


@contextlib.asynccontextmanager
async def Session(token, correlation):
    """An initialized SDK session with a bearer token and a correlation id."""
    headers = {"Authorization": f"Bearer {token}", "x-correlation-id": correlation}
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:
        async with streamable_http_client(URL, http_client=http) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


async def anonymous_is_refused(correlation):
    async with httpx.AsyncClient() as http:
        body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                           "clientInfo": {"name": "anon", "version": "1"}}}
        reply = await http.post(URL, json=body, headers={
            "accept": "application/json, text/event-stream", "x-correlation-id": correlation})
    check(reply.status_code == 401, f"anonymous refused: status {reply.status_code}")
    challenge = reply.headers.get("www-authenticate", "")
    check(challenge.startswith("Bearer ") and "resource_metadata=" in challenge,
          f"challenge names the metadata: {challenge!r}")
    metadata_url = challenge.split('resource_metadata="')[1].split('"')[0]
    async with httpx.AsyncClient() as http:
        metadata = (await http.get(metadata_url)).json()
    check(metadata["resource"] == URL and metadata["authorization_servers"],
          f"protected-resource metadata: {metadata}")
    # The SDK itself cannot open a session without credentials.
    try:
        async with Session("not-a-token", correlation + "-sdk"):
            refused = False
    except BaseException:  # the SDK raises from its task group
        refused = True
    check(refused, "the SDK cannot initialize with a bad token")


async def admin_session(correlation):
    async with Session(ADMIN, correlation) as s:
        tools = {t.name: t for t in (await s.list_tools()).tools}
        check(len(tools) == 11, f"admin sees every tool: {sorted(tools)}")
        schema = tools["execute_code"].inputSchema
        check(schema["properties"]["language"]["enum"] == ["python", "javascript", "bash"]
              and schema["required"] == ["language", "code"]
              and schema["properties"]["code"]["maxLength"] == 262144,
              f"execute_code schema: {schema}")
        check(tools["graph_query"].annotations.readOnlyHint is True, "graph_query is read-only")

        progress = []

        async def on_progress(value, total, message):
            progress.append(message)

        code = "import sys, time\nprint('hello', flush=True)\ntime.sleep(0.3)\nprint('world')\n"
        result = await s.call_tool("execute_code", {"language": "python", "code": code},
                                   progress_callback=on_progress)
        out = result.structuredContent
        check(not result.isError and out["exit_code"] == 0 and out["stdout"] == "hello\nworld\n",
              f"execute_code ran: {out}")
        check(any("hello" in (m or "") for m in progress), f"output arrived as progress: {progress}")
        check("--- stdout ---" in result.content[0].text, "readable stdout text")

        key = f"py_{RUN}"
        upsert = await s.call_tool("graph_upsert", {
            "nodes": [{"key": key, "labels": ["PyDoc"], "properties": {"n": 7, "title": "sdk"}},
                      {"key": key + "_b", "labels": ["PyDoc"]}],
            "relationships": [{"start_key": key, "type": "CITES", "end_key": key + "_b"}]})
        check(upsert.structuredContent["nodes_created"] == 2
              and upsert.structuredContent["relationships_created"] == 1,
              f"graph_upsert: {upsert.structuredContent}")
        query = await s.call_tool("graph_query", {
            "cypher": "MATCH (a:PyDoc {key: $k})-[:CITES]->(b) RETURN a.n AS n, b.key AS b",
            "parameters": {"k": key}})
        check(query.structuredContent["rows"] == [[7, key + "_b"]],
              f"graph_query: {query.structuredContent}")

        try:
            await s.call_tool("execute_code", {"language": "python"})
            invalid = None
        except McpError as e:
            invalid = e.error
        check(invalid is not None and invalid.code == -32602 and "`code`" in invalid.message,
              f"missing argument is INVALID_PARAMS naming the field: {invalid}")

        resource = await s.read_resource("umcp://graph/schema")
        check('"PyDoc"' in resource.contents[0].text, "graph schema resource")
        prompts = sorted(p.name for p in (await s.list_prompts()).prompts)
        check(prompts == ["explain_graph", "review_code", "write_tests"], f"prompts: {prompts}")


async def viewer_session(correlation):
    async with Session(VIEWER, correlation) as s:
        names = sorted(t.name for t in (await s.list_tools()).tools)
        check("execute_code" not in names and "graph_query" in names,
              f"viewer sees no execute_code: {names}")
        result = await s.call_tool("execute_code", {"language": "python", "code": "print(1)"})
        error = (result.structuredContent or {}).get("error", {})
        check(result.isError and error.get("code") == "PERMISSION_DENIED"
              and "tools:execute" in error.get("message", ""),
              f"viewer's execute_code refused: {result}")


async def audited(correlation, event_type, resource):
    """Waits until the admin sees `event_type` for `correlation` through audit_query."""
    deadline = time.monotonic() + 10
    async with Session(ADMIN, f"audit-reader-{RUN}") as s:
        while True:
            result = await s.call_tool("audit_query", {"correlation_id": correlation})
            events = result.structuredContent["events"]
            found = [e for e in events if e["event_type"] == event_type]
            if found or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    check(found and found[0]["resource"] == resource and not found[0]["outcome"]["success"],
          f"{event_type} recorded for {correlation}: {events}")


async def main():
    anon, admin, viewer = f"py-anon-{RUN}", f"py-admin-{RUN}", f"py-viewer-{RUN}"
    await anonymous_is_refused(anon)
    await admin_session(admin)
    await viewer_session(viewer)
    await audited(anon, "auth_failure", "/mcp")
    await audited(viewer, "authz_denied", "/umcp.execution.v1.ExecutionService/ExecuteStream")
    print("all MCP HTTP checks passed")


asyncio.run(main())
