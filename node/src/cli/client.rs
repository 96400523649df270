//! `shoal kv ...` and `shoal counter ...`: the HTTP gateway of any node, from the shell.
//!
//! Exit codes say what happened, for scripts: 0 done, 1 not found or compare-and-set lost,
//! 2 the cluster could not serve it now (503: no majority, shard moving, owner down; retry),
//! 3 bad input, 4 no node answers at the address.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use super::{CounterCommand, Exit, KvCommand};

/// A JSON value from the command line: JSON if it parses, else the text as a JSON string.
fn json_arg(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

struct Gateway {
    client: reqwest::Client,
    http: SocketAddr,
}

impl Gateway {
    fn new(http: SocketAddr) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()?;
        Ok(Self { client, http })
    }

    /// Sends the request and returns the JSON body of a 2xx answer; any other answer becomes
    /// an [`Exit`] with the gateway's reason.
    async fn call(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = req.send().await.map_err(|e| {
            Exit::new(
                4,
                format!(
                    "no node answers at {} ({e}); is one running with --http {}?",
                    self.http, self.http
                ),
            )
        })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let reason = body["error"]
            .as_str()
            .unwrap_or("no reason given")
            .to_string();
        let code = match status.as_u16() {
            404 | 409 => 1,
            503 => 2,
            400 | 413 => 3,
            _ => 1,
        };
        let message = match status.as_u16() {
            409 => format!("{reason} (current value: {})", body["current"]),
            503 => format!("unavailable now, retry: {reason}"),
            _ => reason,
        };
        Err(Exit::new(code, message).into())
    }

    /// `http://ADDR/{first}/{id}{/rest...}`, `id` percent-encoded as one path segment.
    fn url(&self, first: &str, id: &str, rest: &[&str]) -> reqwest::Url {
        let mut url = reqwest::Url::parse(&format!("http://{}/", self.http))
            .expect("a socket address makes a valid URL");
        url.path_segments_mut()
            .expect("an http URL has a path")
            .pop_if_empty()
            .push(first)
            .push(id)
            .extend(rest);
        url
    }
}

pub async fn kv(http: SocketAddr, cmd: KvCommand) -> anyhow::Result<()> {
    let g = Gateway::new(http)?;
    let path = |key: &str| g.url("kv", key, &[]);
    let answer = match cmd {
        KvCommand::Get { key } => g.call(g.client.get(path(&key))).await?["value"].clone(),
        KvCommand::Put { key, value } => {
            let body = json_arg(&value).to_string();
            g.call(g.client.put(path(&key)).body(body)).await?["value"].clone()
        }
        KvCommand::Delete { key } => g.call(g.client.delete(path(&key))).await?["deleted"].clone(),
        KvCommand::Cas { key, expected, new } => {
            let body = json!({
                "expected": expected.as_deref().map(json_arg),
                "new": json_arg(&new),
            });
            let url = g.url("kv", &key, &["cas"]);
            g.call(g.client.post(url).body(body.to_string())).await?["value"].clone()
        }
    };
    println!("{answer}");
    Ok(())
}

pub async fn counter(http: SocketAddr, cmd: CounterCommand) -> anyhow::Result<()> {
    let g = Gateway::new(http)?;
    let path = |id: &str| g.url("counter", id, &[]);
    let answer = match cmd {
        CounterCommand::Get { id } => g.call(g.client.get(path(&id))).await?,
        CounterCommand::Add { id, delta } => {
            let url = g.url("counter", &id, &["add"]);
            let body = json!({ "delta": delta }).to_string();
            g.call(g.client.post(url).body(body)).await?
        }
    };
    println!("{}", answer["value"]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_json_when_they_parse_and_strings_otherwise() {
        assert_eq!(json_arg("42"), json!(42));
        assert_eq!(json_arg(r#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(json_arg("hello world"), json!("hello world"));
        assert_eq!(json_arg(r#""quoted""#), json!("quoted"));
    }

    #[test]
    fn keys_are_one_percent_encoded_path_segment() {
        let g = Gateway::new("127.0.0.1:8101".parse().unwrap()).unwrap();
        assert_eq!(
            g.url("kv", "user-42", &[]).as_str(),
            "http://127.0.0.1:8101/kv/user-42"
        );
        assert_eq!(
            g.url("kv", "a/b c?", &["cas"]).as_str(),
            "http://127.0.0.1:8101/kv/a%2Fb%20c%3F/cas"
        );
    }
}
