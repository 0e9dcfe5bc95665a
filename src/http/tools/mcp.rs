//! The MCP server at `/mcp` (rmcp, streamable HTTP, stateless, JSON responses).
//!
//! `/mcp` sits behind the same bearer-token layer as the REST API, so an MCP request reaches
//! here with its caller's [`Principal`] in the HTTP request's extensions; rmcp hands those
//! request parts to the handler. `tools/list` shows the caller only the tools its role may
//! call, and `tools/call` runs [`super::call`], the same code as `POST /api/call`. A tool that
//! fails reports the failure in its result (`isError`), as MCP asks, so the model can read it.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;

use super::super::AppState;
use super::{CATALOG, ToolSpec};
use crate::auth::Principal;

/// What an agent reads when it connects.
const INSTRUCTIONS: &str = "runbookd fixes stale Proxmox backups. Find incidents with list_incidents, read one \
with get_incident, check live backup ages with get_backup_status, see what is wrong with diagnose \
(read-only), and fix it with start_remediation. Risky steps wait for a human's approval: you cannot \
approve, so report a pending approval to a human instead of retrying.";

/// The MCP service for `/mcp`. Stateless: every request stands alone, so nothing is lost when
/// runbookd restarts and no session outlives its token. `Host` and `Origin` are checked by
/// [`super::rebinding`] in front of it, as for `/api/call`, so rmcp's own check is off.
pub fn service(
    state: AppState,
    max_body_bytes: usize,
) -> StreamableHttpService<McpTools, NeverSessionManager> {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .disable_allowed_hosts()
        .with_max_request_body_bytes(max_body_bytes);
    StreamableHttpService::new(
        move || {
            Ok(McpTools {
                state: state.clone(),
            })
        },
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

#[derive(Clone)]
pub struct McpTools {
    state: AppState,
}

/// The caller the auth layer put on the HTTP request.
fn caller(context: &RequestContext<RoleServer>) -> Result<Principal, ErrorData> {
    context
        .extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Principal>())
        .cloned()
        .ok_or_else(|| {
            ErrorData::internal_error("the request carries no authenticated caller", None)
        })
}

fn as_mcp_tool(spec: &ToolSpec) -> Tool {
    Tool::new(
        spec.name,
        spec.description,
        Arc::new(spec.input_schema.clone()),
    )
    .with_annotations(
        ToolAnnotations::new()
            .read_only(spec.read_only)
            .destructive(!spec.read_only)
            .open_world(false),
    )
}

impl ServerHandler for McpTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("runbookd", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let caller = caller(&context)?;
        Ok(ListToolsResult::with_all_items(
            CATALOG
                .iter()
                .filter(|spec| caller.role.allows(spec.permission))
                .map(as_mcp_tool)
                .collect(),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let caller = caller(&context)?;
        if super::spec(&request.name).is_none() {
            return Err(ErrorData::invalid_params(
                super::unknown_tool(&request.name),
                None,
            ));
        }
        let arguments = request.arguments.map(Value::Object).unwrap_or(Value::Null);
        let result = match super::call(&self.state, &caller, &request.name, arguments).await {
            Ok(output) => CallToolResult::structured(output),
            Err(error) => {
                if error.status().is_server_error() {
                    tracing::error!(error = ?error, tool = %request.name, "tool call failed");
                }
                CallToolResult::error(vec![ContentBlock::text(error.to_string())])
            }
        };
        Ok(result.into())
    }
}
