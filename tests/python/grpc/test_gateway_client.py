"""A Python gRPC client (grpcio, stubs generated from proto/ at test time) through the gateway.

One scenario, in file order: login, create an API key, exchange it, upsert, query,
ExecuteStream (chunks arrive while the program runs, before the result), lint, audit query,
refresh, logout, plus the calls that must be refused. Every status seen is asserted.

Run by scripts/e2e-python.sh, which starts the mesh and sets UMCP_GATEWAY (host:port) and
UMCP_ADMIN_PASSWORD.
"""

import importlib
import os
import pathlib
import sys
import tempfile
import time
import uuid

import grpc
import pytest
from grpc_tools import protoc

PROTO_ROOT = pathlib.Path(__file__).resolve().parents[3] / "proto"
PROTOS = [
    "umcp/common/v1/common.proto",
    "umcp/common/v1/policy.proto",
    "umcp/common/v1/events.proto",
    "umcp/auth/v1/auth.proto",
    "umcp/graph/v1/graph.proto",
    "umcp/execution/v1/execution.proto",
    "umcp/audit/v1/audit.proto",
]
OK = grpc.StatusCode.OK
# How long a revocation may take to reach the gateway (it follows the auth service's stream).
REVOCATION_BOUND_S = 5.0


@pytest.fixture(scope="module")
def pb():
    """Generates the stubs into a temp dir and imports them."""
    out = tempfile.mkdtemp(prefix="umcp-stubs-")
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"]
    assert protoc.main(args + PROTOS) == 0, "grpc_tools.protoc failed"
    sys.path.insert(0, out)
    names = {
        "auth": "umcp.auth.v1.auth_pb2",
        "graph": "umcp.graph.v1.graph_pb2",
        "execution": "umcp.execution.v1.execution_pb2",
        "audit": "umcp.audit.v1.audit_pb2",
        "common": "umcp.common.v1.common_pb2",
        "events": "umcp.common.v1.events_pb2",
    }
    modules = {k: importlib.import_module(v) for k, v in names.items()}
    for k in ("auth", "graph", "execution", "audit"):
        modules[k + "_grpc"] = importlib.import_module(names[k] + "_grpc")
    return type("Stubs", (), modules)


@pytest.fixture(scope="module")
def channel():
    target = os.environ["UMCP_GATEWAY"]
    with grpc.insecure_channel(target) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch


@pytest.fixture(scope="module")
def state():
    """What one step hands to the next (tokens, keys)."""
    return {"correlation": f"py-{uuid.uuid4()}"}


def meta(token=None, correlation=None):
    md = []
    if token:
        md.append(("authorization", f"Bearer {token}"))
    if correlation:
        md.append(("x-correlation-id", correlation))
    return md


def ok(method, request, **kw):
    """Calls a unary method; asserts OK; returns the response."""
    response, call = method.with_call(request, timeout=30, **kw)
    assert call.code() == OK
    return response


def refused(method, request, code, **kw):
    """Calls a unary method; asserts it fails with `code`; returns the error."""
    with pytest.raises(grpc.RpcError) as info:
        method(request, timeout=30, **kw)
    assert info.value.code() == code, f"{info.value.code()}: {info.value.details()}"
    return info.value


def test_login(pb, channel, state):
    auth = pb.auth_grpc.AuthServiceStub(channel)
    refused(auth.Login, pb.auth.LoginRequest(username="admin", password="wrong"), grpc.StatusCode.UNAUTHENTICATED)
    answer = ok(auth.Login, pb.auth.LoginRequest(username="admin", password=os.environ["UMCP_ADMIN_PASSWORD"]),
                metadata=meta(correlation=state["correlation"]))
    tokens = answer.tokens
    assert tokens.token_type == "Bearer"
    assert tokens.access_token.count(".") == 2, "a JWT"
    assert tokens.refresh_token and tokens.expires_in_seconds > 0
    state["access"], state["refresh"] = tokens.access_token, tokens.refresh_token
    me = ok(auth.WhoAmI, pb.auth.WhoAmIRequest(), metadata=meta(tokens.access_token))
    assert me.username == "admin" and "system:admin" in me.permissions
    # Anonymous calls outside the public methods are refused.
    refused(auth.WhoAmI, pb.auth.WhoAmIRequest(), grpc.StatusCode.UNAUTHENTICATED)


def test_api_key_created_and_exchanged(pb, channel, state):
    auth = pb.auth_grpc.AuthServiceStub(channel)
    viewer = ok(auth.CreateUser, pb.auth.CreateUserRequest(username=f"py_viewer_{uuid.uuid4().hex[:8]}",
                                                           password="python viewer password",
                                                           roles=[pb.auth.ROLE_VIEWER]),
                metadata=meta(state["access"])).user
    # A key grants a subset of its owner's roles: admin is not a superset of viewer, so the
    # admin creates the key FOR the viewer (an admin-only option).
    refused(auth.CreateApiKey, pb.auth.CreateApiKeyRequest(name="py-viewer", roles=[pb.auth.ROLE_VIEWER]),
            grpc.StatusCode.PERMISSION_DENIED, metadata=meta(state["access"]))
    created = ok(auth.CreateApiKey, pb.auth.CreateApiKeyRequest(name="py-viewer", owner_user_id=viewer.id),
                 metadata=meta(state["access"]))
    assert created.key.owner_user_id == viewer.id, "empty roles: all of the owner's (viewer)"
    assert created.api_key.startswith("umcp_") and created.key.prefix and not created.key.revoked
    exchanged = ok(auth.ExchangeApiKey, pb.auth.ExchangeApiKeyRequest(api_key=created.api_key))
    assert exchanged.tokens.access_token and exchanged.tokens.refresh_token == "", "no refresh token for keys"
    state["viewer"], state["key_id"] = exchanged.tokens.access_token, created.key.id
    me = ok(auth.WhoAmI, pb.auth.WhoAmIRequest(), metadata=meta(state["viewer"]))
    assert me.auth_method == "api_key" and list(me.roles) == [pb.auth.ROLE_VIEWER]
    state["api_key"] = created.api_key
    refused(auth.ExchangeApiKey, pb.auth.ExchangeApiKeyRequest(api_key="umcp_not_a_key"), grpc.StatusCode.INVALID_ARGUMENT)


def test_upsert_and_query(pb, channel, state):
    graph = pb.graph_grpc.GraphServiceStub(channel)
    Value = pb.common.Value
    request = pb.graph.UpsertRequest(
        nodes=[pb.graph.NodeInput(key="py_a", labels=["PyNode"], properties={"n": Value(int_value=2**53 + 1)}),
               pb.graph.NodeInput(key="py_b", labels=["PyNode"])],
        relationships=[pb.graph.RelationshipInput(start_key="py_a", type="PY_LINK", end_key="py_b")])
    up = ok(graph.Upsert, request, metadata=meta(state["access"], state["correlation"]))
    assert (up.nodes_created + up.nodes_updated, up.relationships_created + up.relationships_updated) == (2, 1)
    # The viewer key may read but not write.
    refused(graph.Upsert, request, grpc.StatusCode.PERMISSION_DENIED, metadata=meta(state["viewer"]))
    query = pb.graph.QueryRequest(cypher="MATCH (a:PyNode {key: $k})-[:PY_LINK]->(b) RETURN a.n AS n, b.key AS b",
                                  parameters={"k": Value(string_value="py_a")})
    answer = ok(graph.Query, query, metadata=meta(state["viewer"]))
    assert list(answer.columns) == ["n", "b"]
    assert answer.rows[0].values[0].int_value == 2**53 + 1, "integers stay integers"
    assert answer.rows[0].values[1].string_value == "py_b"
    refused(graph.Query, pb.graph.QueryRequest(cypher="CREATE (n:X)"), grpc.StatusCode.PERMISSION_DENIED,
            metadata=meta(state["access"]))
    refused(graph.Query, pb.graph.QueryRequest(cypher="MATCH (n RETURN n"), grpc.StatusCode.INVALID_ARGUMENT,
            metadata=meta(state["access"]))
    refused(graph.Query, query, grpc.StatusCode.UNAUTHENTICATED)


def test_execute_stream_chunks_arrive_before_the_result(pb, channel, state):
    execution = pb.execution_grpc.ExecutionServiceStub(channel)
    pause_s = 1.5
    code = f"import sys, time\nprint('first', flush=True)\ntime.sleep({pause_s})\nprint('oops', file=sys.stderr)\n"
    request = pb.execution.ExecuteStreamRequest(
        request=pb.execution.ExecuteRequest(language=pb.execution.LANGUAGE_PYTHON, code=code))
    call = execution.ExecuteStream(request, timeout=60, metadata=meta(state["access"], state["correlation"]))
    events = []
    for message in call:
        events.append((time.monotonic(), message))
    assert call.code() == OK
    kinds = [m.WhichOneof("event") for _, m in events]
    assert kinds[-1] == "result" and kinds.count("result") == 1, kinds
    chunks = [(t, m.output) for t, m in events if m.WhichOneof("event") == "output"]
    stdout = b"".join(c.data for _, c in chunks if c.stream == pb.execution.STREAM_STDOUT)
    stderr = b"".join(c.data for _, c in chunks if c.stream == pb.execution.STREAM_STDERR)
    assert (stdout, stderr) == (b"first\n", b"oops\n")
    first_at, result_at = chunks[0][0], events[-1][0]
    # The first line was delivered while the program slept, not with the result.
    assert result_at - first_at >= pause_s * 0.6, (first_at, result_at)
    result = events[-1][1].result
    assert result.status == pb.execution.RUN_STATUS_OK and result.exit_code == 0
    assert result.stdout == b"" and result.stderr == b"", "the chunks carried the output"
    # The viewer may not execute.
    denied = execution.ExecuteStream(request, timeout=30, metadata=meta(state["viewer"]))
    with pytest.raises(grpc.RpcError) as info:
        list(denied)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_lint(pb, channel, state):
    execution = pb.execution_grpc.ExecutionServiceStub(channel)
    answer = ok(execution.Lint, pb.execution.LintRequest(language=pb.execution.LANGUAGE_PYTHON, code="import os\n"),
                metadata=meta(state["viewer"]))
    assert [d.code for d in answer.diagnostics] == ["F401"]
    assert answer.python.imports == ["os"]
    refused(execution.Lint, pb.execution.LintRequest(language=pb.execution.LANGUAGE_PYTHON, code=""),
            grpc.StatusCode.INVALID_ARGUMENT, metadata=meta(state["viewer"]))


def test_audit_query(pb, channel, state):
    audit = pb.audit_grpc.AuditServiceStub(channel)
    request = pb.audit.QueryRequest(correlation_id=state["correlation"])
    deadline = time.monotonic() + 20
    while True:
        answer = ok(audit.Query, request, metadata=meta(state["access"]))
        types = {e.event_type for e in answer.events}
        wanted = {pb.events.EVENT_TYPE_AUTH_SUCCESS, pb.events.EVENT_TYPE_GRAPH_UPSERT,
                  pb.events.EVENT_TYPE_CODE_EXECUTION}
        if wanted <= types:
            break
        assert time.monotonic() < deadline, f"events of {state['correlation']}: {sorted(types)}"
        time.sleep(0.2)
    assert all(e.correlation_id == state["correlation"] for e in answer.events)
    seqs = [e.sequence for e in answer.events]
    assert seqs == sorted(seqs, reverse=True), "newest first"
    refused(audit.Query, request, grpc.StatusCode.PERMISSION_DENIED, metadata=meta(state["viewer"]))


def test_refresh(pb, channel, state):
    auth = pb.auth_grpc.AuthServiceStub(channel)
    answer = ok(auth.Refresh, pb.auth.RefreshRequest(refresh_token=state["refresh"]))
    assert answer.tokens.refresh_token != state["refresh"], "refresh tokens rotate"
    state["access"], state["refresh"] = answer.tokens.access_token, answer.tokens.refresh_token
    me = ok(auth.WhoAmI, pb.auth.WhoAmIRequest(), metadata=meta(state["access"]))
    assert me.auth_method == "refresh"
    refused(auth.Refresh, pb.auth.RefreshRequest(refresh_token="not-a-refresh-token"), grpc.StatusCode.UNAUTHENTICATED)


def test_logout(pb, channel, state):
    auth = pb.auth_grpc.AuthServiceStub(channel)
    ok(auth.RevokeApiKey, pb.auth.RevokeApiKeyRequest(key_id=state["key_id"]), metadata=meta(state["access"]))
    refused(auth.ExchangeApiKey, pb.auth.ExchangeApiKeyRequest(api_key=state["api_key"]), grpc.StatusCode.UNAUTHENTICATED)
    ok(auth.Logout, pb.auth.LogoutRequest(refresh_token=state["refresh"]), metadata=meta(state["access"]))
    deadline = time.monotonic() + REVOCATION_BOUND_S
    while True:
        try:
            auth.WhoAmI(pb.auth.WhoAmIRequest(), timeout=10, metadata=meta(state["access"]))
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e.details()
            break
        assert time.monotonic() < deadline, "the access token still works after logout"
        time.sleep(0.1)
    refused(auth.Refresh, pb.auth.RefreshRequest(refresh_token=state["refresh"]), grpc.StatusCode.UNAUTHENTICATED)
