//! The MCP server: its tools (routed by rmcp, listed per caller), its prompts and the graph
//! schema resource.

use std::time::Duration;

use rmcp::handler::server::router::prompt::PromptRouter;
use rmcp::handler::server::tool::{ToolCallContext, ToolRouter};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, GetPromptResult, Implementation, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, PromptMessage, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, Resource, ResourceContents,
    Role as PromptMessageRole, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{
    ErrorData, RoleServer, ServerHandler, prompt, prompt_handler, prompt_router, tool_handler,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use tonic::transport::Channel;
use umcp_proto::auth::v1::WhoAmIRequest;
use umcp_proto::auth::v1::auth_service_client::AuthServiceClient;
use umcp_proto::catalogue::{Access, MethodCatalogue};

use super::link::{Callers, Link, TokenSource, code_name};
use super::validate;

/// URI of the graph schema resource.
pub const GRAPH_SCHEMA_URI: &str = "umcp://graph/schema";

/// Each tool and the RPC it calls: its permission is that RPC's, from the method catalogue.
pub(crate) const TOOL_METHODS: [(&str, &str); 11] = [
    ("lint_code", "/umcp.execution.v1.ExecutionService/Lint"),
    (
        "execute_code",
        "/umcp.execution.v1.ExecutionService/ExecuteStream",
    ),
    ("run_tests", "/umcp.execution.v1.ExecutionService/RunTests"),
    (
        "generate_code",
        "/umcp.execution.v1.ExecutionService/GenerateCode",
    ),
    (
        "list_languages",
        "/umcp.execution.v1.ExecutionService/ListLanguages",
    ),
    ("graph_upsert", "/umcp.graph.v1.GraphService/Upsert"),
    ("graph_query", "/umcp.graph.v1.GraphService/Query"),
    ("graph_delete", "/umcp.graph.v1.GraphService/Delete"),
    ("graph_metrics", "/umcp.graph.v1.GraphService/GetMetrics"),
    ("audit_query", "/umcp.audit.v1.AuditService/Query"),
    ("whoami", "/umcp.auth.v1.AuthService/WhoAmI"),
];

/// Whether permissions `granted` (scopes like `tools:execute`) allow calling `tool`. A tool
/// without a catalogue method is never listed (a unit test keeps the table complete).
pub(crate) fn may_call(tool: &str, granted: &[String]) -> bool {
    let Some((_, path)) = TOOL_METHODS.iter().find(|(name, _)| *name == tool) else {
        return false;
    };
    match MethodCatalogue::global().method(path).map(|m| m.access) {
        Some(Access::Public | Access::Authenticated) => true,
        Some(Access::Permission(permission)) => granted.iter().any(|g| g == permission.scope()),
        None => false,
    }
}

/// The MCP server of one request (HTTP) or one process (stdio); cheap to clone.
#[derive(Debug, Clone)]
pub struct McpServer {
    tool_router: ToolRouter<Self>,
    prompt_router: PromptRouter<Self>,
    pub(crate) link: Link,
}

impl McpServer {
    pub(crate) fn new(link: Link) -> Self {
        Self {
            tool_router: Self::execution_router() + Self::data_router(),
            prompt_router: Self::prompt_router(),
            link,
        }
    }

    /// A server for one user over any transport (the `umcp mcp` stdio bridge): every call goes
    /// to the gateway at `channel` with `tokens`' bearer token and a `timeout` deadline.
    #[must_use]
    pub fn for_user(
        channel: Channel,
        tokens: std::sync::Arc<dyn TokenSource>,
        timeout: Duration,
    ) -> Self {
        Self::new(Link {
            channel,
            timeout,
            callers: Callers::Fixed(tokens),
        })
    }

    /// The permission scopes of the caller behind `ctx`: from its verified token over HTTP,
    /// from `WhoAmI` for a fixed user (whose token this process does not verify).
    async fn granted(&self, ctx: &RequestContext<RoleServer>) -> Result<Vec<String>, ErrorData> {
        let who = self.link.who(ctx).await?;
        if let Some(caller) = &who.caller {
            return Ok(caller
                .principal
                .permissions()
                .iter()
                .map(|p| p.scope().to_owned())
                .collect());
        }
        let mut client = AuthServiceClient::new(self.link.channel.clone());
        match client
            .who_am_i(self.link.request(&who, WhoAmIRequest {}))
            .await
        {
            Ok(response) => Ok(response.into_inner().permissions),
            Err(status) => Err(ErrorData::invalid_request(
                format!("{}: {}", code_name(status.code()), status.message()),
                None,
            )),
        }
    }
}

/// `review_code` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct ReviewArgs {
    /// Language of the code: python, javascript or bash.
    pub language: String,
    /// The code to review.
    pub code: String,
    /// What to look at most (e.g. security, performance); default: everything.
    pub focus: Option<String>,
}

/// `write_tests` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct WriteTestsArgs {
    /// File name of the module, e.g. `calc.py`.
    pub module_path: String,
    /// The module's source.
    pub code: String,
}

/// `explain_graph` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct ExplainGraphArgs {
    /// A label or relationship type to concentrate on; default: the whole graph.
    pub focus: Option<String>,
}

#[prompt_router]
impl McpServer {
    /// `review_code`.
    #[prompt(
        description = "Review code for bugs, security problems and style, using lint_code first."
    )]
    async fn review_code(&self, Parameters(args): Parameters<ReviewArgs>) -> Vec<PromptMessage> {
        let focus = args
            .focus
            .unwrap_or_else(|| "correctness, security, readability".into());
        vec![PromptMessage::new_text(
            PromptMessageRole::User,
            format!(
                "Review this {lang} code, concentrating on {focus}. First call the `lint_code` tool \
                 with language `{lang}` and this code, then explain each finding that matters, \
                 point out problems the linter cannot see, and propose concrete fixes.\n\n\
                 ```{lang}\n{code}\n```",
                lang = args.language,
                code = args.code
            ),
        )]
    }

    /// `write_tests`.
    #[prompt(description = "Write pytest tests for a Python module and run them with run_tests.")]
    async fn write_tests(
        &self,
        Parameters(args): Parameters<WriteTestsArgs>,
    ) -> Vec<PromptMessage> {
        let module = args.module_path.trim_end_matches(".py").replace('/', ".");
        vec![PromptMessage::new_text(
            PromptMessageRole::User,
            format!(
                "Write pytest tests for the module `{path}` below: cover normal cases, edge \
                 cases and errors, one behaviour per test. Then call `run_tests` with \
                 modules = {{\"{path}\": <the module>}} and tests = {{\"test_{file}\": <your \
                 tests>}} (import it as `import {module}`), and fix the tests until they pass or \
                 a failure shows a real bug, which you then describe.\n\n```python\n{code}\n```",
                path = args.module_path,
                file = args
                    .module_path
                    .rsplit('/')
                    .next()
                    .unwrap_or(&args.module_path),
                code = args.code
            ),
        )]
    }

    /// `explain_graph`.
    #[prompt(
        description = "Explain what the knowledge graph holds, from its current schema (labels, types, counts)."
    )]
    async fn explain_graph(
        &self,
        Parameters(args): Parameters<ExplainGraphArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResult, ErrorData> {
        let schema = self.graph_schema(&ctx).await?;
        let focus = args
            .focus
            .map_or_else(String::new, |f| format!(" Concentrate on `{f}`."));
        let text = format!(
            "Explain what this knowledge graph holds and how its parts relate.{focus} Its \
             current schema (labels and relationship types with counts) is below; use the \
             `graph_query` tool with read-only Cypher (e.g. `MATCH (n:Label) RETURN n LIMIT 5`) \
             to look at examples before you describe them.\n\n```json\n{schema}\n```"
        );
        Ok(
            GetPromptResult::new(vec![PromptMessage::new_text(PromptMessageRole::User, text)])
                .with_description("Explain the knowledge graph"),
        )
    }
}

impl McpServer {
    /// The graph schema as pretty JSON, through `GetMetrics` as the caller.
    async fn graph_schema(&self, ctx: &RequestContext<RoleServer>) -> Result<String, ErrorData> {
        let who = self.link.who(ctx).await?;
        let metrics = self.metrics(&who).await.map_err(|status| {
            let message = format!("{}: {}", code_name(status.code()), status.message());
            match status.code() {
                tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
                    ErrorData::invalid_request(message, None)
                }
                _ => ErrorData::internal_error(message, None),
            }
        })?;
        let schema = super::data_tools::metrics_json(&metrics);
        Ok(serde_json::to_string_pretty(&schema).unwrap_or_default())
    }
}

#[tool_handler(router = self.tool_router)]
#[prompt_handler(router = self.prompt_router)]
impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new(
            "umcp-gateway",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(
            "Ultimate MCP Mesh: run and lint code in a sandbox, run pytest, render templates, and \
             read or write a knowledge graph. Tools appear only when your roles allow them; \
             every call is rate limited and audited.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let granted = self.granted(&ctx).await?;
        let tools = self
            .tool_router
            .list_all()
            .into_iter()
            .filter(|tool| may_call(&tool.name, &granted))
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // Arguments are checked against the published schema before any service sees them; a
        // tool the caller's roles do not allow still goes to the gateway, which refuses it
        // (PERMISSION_DENIED) and records the denial exactly as for a gRPC call.
        if let Some(tool) = self.tool_router.get(&request.name) {
            validate::check(&tool.input_schema, request.arguments.as_ref()).map_err(|invalid| {
                ErrorData::invalid_params(
                    invalid.to_string(),
                    Some(json!({ "field": invalid.field })),
                )
            })?;
        }
        let context = ToolCallContext::new(self, request, ctx);
        self.tool_router.call(context).await
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let schema = Resource::new(GRAPH_SCHEMA_URI, "graph-schema")
            .with_title("Knowledge graph schema")
            .with_description("Node labels and relationship types with their counts, and the average degree (needs graph:query)")
            .with_mime_type("application/json");
        Ok(ListResourcesResult::with_all_items(vec![schema]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        if request.uri != GRAPH_SCHEMA_URI {
            return Err(ErrorData::resource_not_found(
                format!(
                    "no resource `{}`; available: {GRAPH_SCHEMA_URI}",
                    request.uri
                ),
                None,
            ));
        }
        let schema = self.graph_schema(&ctx).await?;
        let contents =
            ResourceContents::text(schema, GRAPH_SCHEMA_URI).with_mime_type("application/json");
        Ok(ReadResourceResult::new(vec![contents]).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_a_catalogue_method_and_the_viewer_sees_no_execute() {
        for (tool, path) in TOOL_METHODS {
            assert!(
                MethodCatalogue::global().method(path).is_some(),
                "{tool}: {path}"
            );
        }
        let viewer: Vec<String> = ["tools:read", "tools:lint", "graph:query"]
            .map(String::from)
            .to_vec();
        assert!(may_call("lint_code", &viewer));
        assert!(may_call("whoami", &viewer));
        assert!(!may_call("execute_code", &viewer));
        assert!(!may_call("graph_upsert", &viewer));
        assert!(!may_call("no_such_tool", &viewer));
    }

    #[tokio::test]
    async fn the_routers_serve_exactly_the_catalogued_tools_with_object_schemas() {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        let server = McpServer::new(Link {
            channel,
            timeout: Duration::from_secs(1),
            callers: Callers::Http,
        });
        let mut routed: Vec<String> = server
            .tool_router
            .list_all()
            .iter()
            .map(|t| t.name.to_string())
            .collect();
        routed.sort();
        let mut catalogued: Vec<String> =
            TOOL_METHODS.iter().map(|(n, _)| (*n).to_owned()).collect();
        catalogued.sort();
        assert_eq!(routed, catalogued);
        for tool in server.tool_router.list_all() {
            assert_eq!(
                tool.input_schema.get("type"),
                Some(&json!("object")),
                "{}",
                tool.name
            );
            assert!(
                tool.description.as_deref().is_some_and(|d| d.len() > 40),
                "{}",
                tool.name
            );
            let refs = serde_json::to_string(&tool.input_schema).unwrap_or_default();
            assert!(!refs.contains("$ref"), "{}: schemas are inlined", tool.name);
        }
        assert_eq!(server.prompt_router.list_all().len(), 3);
    }
}
