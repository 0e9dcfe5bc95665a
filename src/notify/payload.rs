//! The body each kind of sink gets.
//!
//! - webhook: the notification as JSON, with its links;
//! - ntfy: a JSON publish to the server's root URL (`topic`, `title`, `message`, `priority`,
//!   `tags`, `actions`): Approve and Reject are `http` actions that POST the links from the
//!   phone, Open is a `view` action;
//! - slack: `{"text", "blocks"}` with a section and an actions block of link buttons (a button
//!   opens the link's confirmation page, whose form makes the decision).

use serde_json::{Value, json};

use super::{Links, Notification};
use crate::config::notify::{EventKind, Sink, SinkKind};

pub(super) fn body(sink: &Sink, notification: &Notification, links: &Links) -> Value {
    match sink.kind {
        SinkKind::Webhook => webhook(notification, links),
        SinkKind::Ntfy => ntfy(
            sink.topic.as_deref().unwrap_or_default(),
            notification,
            links,
        ),
        SinkKind::Slack => slack(notification, links),
    }
}

fn webhook(n: &Notification, links: &Links) -> Value {
    json!({
        "event": n.event,
        "title": n.title,
        "message": n.message,
        "incident": n.incident_id.map(|id| json!({"id": id})),
        "run": n.run,
        "approval": n.approval,
        "reason": n.reason,
        "links": links,
    })
}

fn ntfy(topic: &str, n: &Notification, links: &Links) -> Value {
    let (priority, tag) = match n.event {
        EventKind::ApprovalRequested => (4, "question"),
        EventKind::RunEscalated => (4, "rotating_light"),
        EventKind::RunResolved => (3, "white_check_mark"),
        EventKind::BreakerTripped => (5, "no_entry"),
    };
    let mut actions = Vec::new();
    for (label, url) in [("Approve", &links.approve), ("Reject", &links.reject)] {
        if let Some(url) = url {
            actions.push(json!({
                "action": "http",
                "label": label,
                "url": url,
                "method": "POST",
                "headers": {"Accept": "application/json"},
                "clear": true,
            }));
        }
    }
    actions.push(json!({"action": "view", "label": "Open", "url": links.open}));
    json!({
        "topic": topic,
        "title": n.title,
        "message": n.message,
        "priority": priority,
        "tags": ["runbookd", tag],
        "actions": actions,
    })
}

fn slack(n: &Notification, links: &Links) -> Value {
    let mut buttons = Vec::new();
    for (label, url, style) in [
        ("Approve", &links.approve, Some("primary")),
        ("Reject", &links.reject, Some("danger")),
        ("Open", &Some(links.open.clone()), None),
    ] {
        if let Some(url) = url {
            let mut button = json!({
                "type": "button",
                "text": {"type": "plain_text", "text": label},
                "url": url,
            });
            if let Some(style) = style {
                button["style"] = json!(style);
            }
            buttons.push(button);
        }
    }
    let text = format!("{}: {}", n.title, n.message);
    json!({
        "text": escape_mrkdwn(&text),
        "blocks": [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": format!("*{}*\n{}", escape_mrkdwn(&n.title), escape_mrkdwn(&n.message)),
                },
            },
            {"type": "actions", "elements": buttons},
        ],
    })
}

/// Slack's mrkdwn control characters, `&`, `<` and `>`, as Slack's entities (so a command
/// cannot become a link or a mention). Slack's own rule, not HTML escaping.
fn escape_mrkdwn(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
