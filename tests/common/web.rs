//! Signing in to the web page as a browser does: load the sign-in form (its nonce cookie and
//! CSRF field), then post the token with both.

/// The sign-in form's cookie (`runbookd_login=…`) and the CSRF token its form carries.
pub async fn login_form(client: &reqwest::Client, base: &str) -> (String, String) {
    let response = client
        .get(format!("{base}/login"))
        .send()
        .await
        .expect("GET /login answers");
    assert_eq!(response.status(), 200, "GET /login");
    let cookie = set_cookie(&response, "runbookd_login")
        .expect("the sign-in form sets its nonce cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let html = response.text().await.unwrap();
    (cookie, csrf_in(&html))
}

/// Loads the sign-in form and posts `token` (and `more` fields) with its cookie and CSRF token.
pub async fn sign_in(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    more: &[(&str, &str)],
) -> reqwest::Response {
    let (cookie, csrf) = login_form(client, base).await;
    let mut form = vec![("token", token), ("csrf", csrf.as_str())];
    form.extend_from_slice(more);
    client
        .post(format!("{base}/login"))
        .header("cookie", cookie)
        .form(&form)
        .send()
        .await
        .expect("POST /login answers")
}

/// Signs in with `token` and returns the session's `runbookd_session=…` pair to send back.
/// `client` must not follow redirects.
pub async fn session_cookie(client: &reqwest::Client, base: &str, token: &str) -> String {
    let response = sign_in(client, base, token, &[]).await;
    assert_eq!(response.status(), 303, "signs in");
    set_cookie(&response, "runbookd_session")
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// The whole `Set-Cookie` value that sets cookie `name`, if the response sets it.
pub fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// The CSRF token of the first form in `html`.
pub fn csrf_in(html: &str) -> String {
    regex::Regex::new(r#"name="csrf" value="([0-9a-f]+)""#)
        .unwrap()
        .captures(html)
        .unwrap_or_else(|| panic!("a form with a CSRF token in {html}"))[1]
        .to_owned()
}
