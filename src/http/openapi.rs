//! `GET /openapi.json`: the REST API described with utoipa. Routes are registered through
//! `utoipa_axum`'s router from their `#[utoipa::path]` attributes, so a route and its
//! description come from one place; `/mcp`, a protocol endpoint rather than REST, is added by
//! hand.

use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{OpenApi, ResponseBuilder};

/// Fills in what the route attributes do not say: title, version, the bearer scheme, `/mcp`.
pub fn complete(mut api: OpenApi) -> OpenApi {
    api.info.title = "runbookd".to_owned();
    api.info.version = env!("CARGO_PKG_VERSION").to_owned();
    api.info.description = Some(
        "Alert-driven remediation for a Proxmox homelab. Every route takes \
         `Authorization: Bearer TOKEN` and names the roles it accepts, except the health checks \
         and this description (open) and the one-tap links (the signed link is the \
         credential). Errors are `{\"error\":{\"code\",\"message\"}}`; `/api/call` answers \
         in its own bridge shape."
            .to_owned(),
    );
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    let mcp = OperationBuilder::new()
        .tag("tools")
        .summary(Some(
            "The agent's tools over MCP (streamable HTTP, JSON-RPC 2.0)",
        ))
        .description(Some(
            "The Model Context Protocol endpoint: the same tools as POST /api/call. Stateless; \
             send `Accept: application/json, text/event-stream`. Roles: agent, approver, admin \
             (tools/list shows each role the tools it may call).",
        ))
        .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
        .response(
            "200",
            ResponseBuilder::new()
                .description("A JSON-RPC response")
                .build(),
        )
        .response(
            "401",
            ResponseBuilder::new()
                .description("No or unknown token")
                .build(),
        )
        .response(
            "403",
            ResponseBuilder::new()
                .description("A role that may not read, or a Host that is not allowed")
                .build(),
        )
        .build();
    api.paths
        .paths
        .insert("/mcp".to_owned(), PathItem::new(HttpMethod::Post, mcp));
    api
}
