//! `GET /openapi.json`: the REST API described with utoipa. Routes are registered through
//! `utoipa_axum`'s router from their `#[utoipa::path]` attributes, so a route and its
//! description come from one place; `/mcp`, a protocol endpoint rather than REST, is added by
//! hand, and so are the answers the router's layers give on every route (401 and 403 from the
//! bearer layer, 503 from the request timeout), where those layers are applied for all.

use utoipa::openapi::path::{HttpMethod, Operation, OperationBuilder, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Required, Response, ResponseBuilder};

/// Fills in what the route attributes do not say: title, version, the bearer scheme, `/mcp`,
/// and the layers' answers.
pub fn complete(mut api: OpenApi) -> OpenApi {
    api.info.title = "runbookd".to_owned();
    api.info.version = env!("CARGO_PKG_VERSION").to_owned();
    api.info.description = Some(
        "Alert-driven remediation for a Proxmox homelab. Every route takes \
         `Authorization: Bearer TOKEN` and names the roles it accepts, except the health checks \
         and this description (open) and the one-tap links (the signed link is the \
         credential). Errors are `{\"error\":{\"code\",\"message\"},\"request_id\"}`, the id \
         also in the `x-request-id` answer header; `/api/call` answers \
         the tool's own refusals in its bridge shape."
            .to_owned(),
    );
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    api.paths
        .paths
        .insert("/mcp".to_owned(), PathItem::new(HttpMethod::Post, mcp()));
    for item in api.paths.paths.values_mut() {
        for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
            describe_layer_answers(operation);
        }
    }
    api
}

/// `/mcp`, as rmcp's streamable HTTP transport answers it.
fn mcp() -> Operation {
    let any_object = || Schema::Object(ObjectBuilder::new().schema_type(Type::Object).build());
    let text = |description: &str| ResponseBuilder::new().description(description).build();
    OperationBuilder::new()
        .tag("tools")
        .operation_id(Some("call_mcp"))
        .summary(Some(
            "The agent's tools over MCP (streamable HTTP, JSON-RPC 2.0)",
        ))
        .description(Some(
            "The Model Context Protocol endpoint: the same tools as POST /api/call. Stateless; \
             send `Accept: application/json, text/event-stream`. Roles: agent, approver, admin \
             (tools/list shows each role the tools it may call). A request from a browser \
             must come from `notify.public_url`'s origin or one of `http.allowed_origins`, and \
             name a `Host` runbookd is reached by.",
        ))
        .request_body(Some(
            RequestBodyBuilder::new()
                .description(Some("A JSON-RPC 2.0 request or notification"))
                .content("application/json", Content::new(Some(any_object())))
                .required(Some(Required::True))
                .build(),
        ))
        .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
        .response(
            "200",
            ResponseBuilder::new()
                .description("A JSON-RPC response (a tool's failure is a result with isError)")
                .content("application/json", Content::new(Some(any_object())))
                .build(),
        )
        .response("202", text("A notification or response was accepted"))
        .response(
            "400",
            text("Not a JSON-RPC message, or headers that contradict it"),
        )
        .response(
            "403",
            error_response("A role that may not read, or a Host or Origin that is not allowed"),
        )
        .response(
            "405",
            text("Only POST is served: the endpoint keeps no sessions"),
        )
        .response(
            "406",
            text("`Accept` lacks application/json or text/event-stream"),
        )
        .response("413", text("The body is larger than `http.max_body_bytes`"))
        .response("415", text("The body is not declared as JSON"))
        .response(
            "422",
            text("A JSON-RPC message of a kind the server does not take"),
        )
        .build()
}

/// An answer in the common error shape, `ErrorBody`.
fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
        )
        .build()
}

/// Adds the answers the layers give: 401 and 403 where the bearer layer guards the route, 503
/// everywhere (the request timeout, or a database too busy to answer). Where the route itself
/// answers that status in another shape (`/api/call`), the body may be either.
fn describe_layer_answers(operation: &mut Operation) {
    let guarded = operation
        .security
        .as_ref()
        .is_some_and(|requirements| !requirements.is_empty());
    let mut layers = vec![(
        "503",
        "The request timed out or the database was too busy; retry it",
    )];
    if guarded {
        layers.push((
            "401",
            "No token, an unknown token, or an Authorization header that is not `Bearer TOKEN`",
        ));
        layers.push(("403", "The token's role may not call this route"));
    }
    for (status, description) in layers {
        let answers = &mut operation.responses.responses;
        let Some(RefOr::T(own)) = answers.get_mut(status) else {
            answers.insert(status.to_owned(), error_response(description).into());
            continue;
        };
        let error_body = RefOr::Ref(Ref::from_schema_name("ErrorBody"));
        let Some(RefOr::T(content)) = own.content.get_mut("application/json") else {
            continue;
        };
        if content.schema.as_ref() == Some(&error_body) {
            continue;
        }
        let either = content
            .schema
            .take()
            .into_iter()
            .fold(AnyOfBuilder::new(), AnyOfBuilder::item)
            .item(error_body);
        content.schema = Some(Schema::AnyOf(either.build()).into());
        own.description = format!("{}; or: {description}", own.description);
    }
}
