//! The server's HTTP API, as a client sees it.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use sync_core::ids::DocumentId;

use crate::error::HarnessError;

/// A failure guard for single requests, not a performance expectation.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP client for one server address. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    client: reqwest::Client,
}

/// What `POST /api/cases` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreatedCase {
    pub id: DocumentId,
    pub coordination: DocumentId,
}

/// What `GET /api/cases/{id}` answered.
#[derive(Debug, Clone)]
pub struct CaseView {
    /// Change hashes, hex, as the server lists them.
    pub heads: Vec<String>,
    /// The document tree.
    pub case: Value,
    /// `[{ "path", "values": [{ "value", "actor" }] }]`
    pub conflicts: Value,
}

impl CaseView {
    /// The value at a dotted path of the document tree (`military.unit`).
    pub fn get(&self, path: &str) -> Option<&Value> {
        path.split('.').try_fold(&self.case, |v, key| v.get(key))
    }

    /// The concurrent values of the register at `path`, if it is in
    /// conflict.
    pub fn conflict_values(&self, path: &str) -> Vec<Value> {
        self.conflicts
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c.get("path").and_then(Value::as_str) == Some(path))
            .flat_map(|c| c.get("values").and_then(Value::as_array).cloned())
            .flatten()
            .filter_map(|v| v.get("value").cloned())
            .collect()
    }
}

/// `/metrics` as text, with a lookup by name.
#[derive(Debug, Clone)]
pub struct Metrics(pub String);

impl Metrics {
    /// The value of an unlabelled sample, e.g. `casesync_documents_loaded`.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.lines().find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok()).flatten()
        })
    }
}

fn parse_doc_id(v: &Value, key: &str) -> Result<DocumentId, HarnessError> {
    let s = v
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| HarnessError::Unexpected(format!("no `{key}` in {v}")))?;
    DocumentId::parse_url_or_id(s)
        .map_err(|e| HarnessError::Unexpected(format!("bad document id {s:?}: {e}")))
}

impl Api {
    pub fn new(addr: SocketAddr) -> Result<Self, HarnessError> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .build()?;
        Ok(Self {
            base: format!("http://{addr}"),
            client,
        })
    }

    /// `http://ADDR`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// A request builder for a path, for tests that need headers of their
    /// own (or none).
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    pub async fn healthz(&self) -> Result<bool, HarnessError> {
        let resp = self
            .request(reqwest::Method::GET, "/healthz")
            .send()
            .await?;
        Ok(resp.status().is_success())
    }

    pub async fn metrics(&self) -> Result<Metrics, HarnessError> {
        let resp = self
            .request(reqwest::Method::GET, "/metrics")
            .send()
            .await?;
        let status = resp.status().as_u16();
        let body = resp.text().await?;
        if status != 200 {
            return Err(HarnessError::Status {
                what: "GET /metrics".into(),
                status,
                body,
            });
        }
        Ok(Metrics(body))
    }

    /// One metric; an absent metric is an error.
    pub async fn metric(&self, name: &str) -> Result<f64, HarnessError> {
        self.metrics()
            .await?
            .get(name)
            .ok_or_else(|| HarnessError::Unexpected(format!("no metric {name}")))
    }

    /// `POST /api/cases` with initial values (`("military.unit", "…")`).
    pub async fn create_case(
        &self,
        token: &str,
        values: &[(&str, &str)],
    ) -> Result<CreatedCase, HarnessError> {
        let values: serde_json::Map<String, Value> = values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let resp = self
            .request(reqwest::Method::POST, "/api/cases")
            .bearer_auth(token)
            .json(&json!({ "values": values }))
            .send()
            .await?;
        let status = resp.status().as_u16();
        if status != 201 {
            return Err(HarnessError::Status {
                what: "POST /api/cases".into(),
                status,
                body: resp.text().await?,
            });
        }
        let body: Value = resp.json().await?;
        Ok(CreatedCase {
            id: parse_doc_id(&body, "id")?,
            coordination: parse_doc_id(&body, "coordination")?,
        })
    }

    /// `GET /api/cases`: the ids of the caller's cases.
    pub async fn list_cases(&self, token: &str) -> Result<Vec<DocumentId>, HarnessError> {
        let (status, body) = self.get_json("/api/cases", token).await?;
        if status != 200 {
            return Err(HarnessError::Status {
                what: "GET /api/cases".into(),
                status,
                body: body.to_string(),
            });
        }
        body.get("cases")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| parse_doc_id(c, "id"))
            .collect()
    }

    /// `GET /api/cases/{id}`; any status but 200 is an error.
    pub async fn get_case(&self, token: &str, id: &DocumentId) -> Result<CaseView, HarnessError> {
        let path = format!("/api/cases/{}", id.to_url());
        let (status, body) = self.get_json(&path, token).await?;
        if status != 200 {
            return Err(HarnessError::Status {
                what: format!("GET {path}"),
                status,
                body: body.to_string(),
            });
        }
        let heads = body
            .get("heads")
            .and_then(Value::as_array)
            .ok_or_else(|| HarnessError::Unexpected(format!("no heads in {body}")))?
            .iter()
            .filter_map(|h| h.as_str().map(str::to_owned))
            .collect();
        Ok(CaseView {
            heads,
            case: body.get("case").cloned().unwrap_or(Value::Null),
            conflicts: body.get("conflicts").cloned().unwrap_or(Value::Null),
        })
    }

    /// A GET with a bearer token: the status and the body as JSON (`null`
    /// when it is not JSON).
    pub async fn get_json(&self, path: &str, token: &str) -> Result<(u16, Value), HarnessError> {
        let resp = self
            .request(reqwest::Method::GET, path)
            .bearer_auth(token)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Any request with an optional bearer token and JSON body: the status
    /// and the body as JSON (`null` when empty or not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<(u16, Value), HarnessError> {
        let mut req = self.request(method, path);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// `POST /api/cases/{id}/invitations`: (invitation id, code).
    pub async fn invite(
        &self,
        token: &str,
        case: &DocumentId,
        body: Value,
    ) -> Result<(String, String), HarnessError> {
        let path = format!("/api/cases/{}/invitations", case.to_url());
        let (status, body) = self
            .call(reqwest::Method::POST, &path, Some(token), Some(body))
            .await?;
        if status != 201 {
            return Err(HarnessError::Status {
                what: format!("POST {path}"),
                status,
                body: body.to_string(),
            });
        }
        let field = |name: &str| {
            body.get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| HarnessError::Unexpected(format!("no {name} in {body}")))
        };
        Ok((field("id")?, field("code")?))
    }

    /// `POST /api/invitations/{code}/accept`: the status.
    pub async fn accept(&self, token: &str, code: &str) -> Result<u16, HarnessError> {
        let path = format!("/api/invitations/{code}/accept");
        Ok(self
            .call(reqwest::Method::POST, &path, Some(token), None)
            .await?
            .0)
    }

    /// Invites and accepts in one step: `member` joins `case`.
    pub async fn join_case(
        &self,
        inviter: &str,
        member: &str,
        case: &DocumentId,
    ) -> Result<(), HarnessError> {
        let (_, code) = self.invite(inviter, case, json!({})).await?;
        match self.accept(member, &code).await? {
            200 => Ok(()),
            status => Err(HarnessError::Status {
                what: "accept invitation".into(),
                status,
                body: String::new(),
            }),
        }
    }
}
