//! `kademlia shell`: an interactive console reading one command per line from any input.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::client::{connect, format_info, format_locate, format_routes};
use crate::pb;

const HELP: &str = "commands:
  set KEY VALUE      store VALUE under KEY: the rest of the line after the one space
                     that follows KEY, exactly as typed (spaces included)
  get KEY            print KEY's value
  delete KEY         delete KEY
  locate KEY         the k closest nodes to KEY and which hold it
  routes             this node's routing table
  info               this node's id, address and counters
  help               this text
  quit               leave (end of input works too)
";

/// `KEY VALUE`: the key up to the first space or tab, and the value after that one character,
/// as it stands (it may be empty, or start or end with spaces).
fn split_key(key_and_value: &str) -> Option<(&str, &str)> {
    let at = key_and_value.find([' ', '\t'])?;
    Some((&key_and_value[..at], &key_and_value[at + 1..]))
}

/// Reads commands from `input` and writes answers to `output` until `quit` or end of input.
pub async fn run<R, W>(addr: &str, input: R, mut output: W) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut client = connect(addr).await?;
    let mut lines = BufReader::new(input).lines();
    output
        .write_all(format!("connected to {addr}; type help for commands\n").as_bytes())
        .await?;
    loop {
        output.write_all(b"kademlia> ").await?;
        output.flush().await?;
        let Some(typed) = lines.next_line().await? else {
            break;
        };
        let line = typed.trim();
        if line.is_empty() {
            continue;
        }
        let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        // For `set`, the value as typed: the untrimmed line past the key and one separator.
        let key_and_value = typed.trim_start()[cmd.len()..].trim_start();
        let answer = match cmd {
            "quit" | "exit" => break,
            "help" => HELP.to_string(),
            "set" | "put" => match split_key(key_and_value) {
                Some((key, value)) => {
                    let req = pb::PutRequest {
                        key: key.to_string(),
                        value: value.as_bytes().to_vec(),
                        ttl_seconds: None,
                    };
                    match client.put(req).await {
                        Ok(r) => format!("OK stored on {} node(s)\n", r.into_inner().replicas),
                        Err(s) => format!("error: {}\n", s.message()),
                    }
                }
                None => "usage: set KEY VALUE\n".to_string(),
            },
            "get" if !rest.is_empty() => match client
                .get(pb::GetRequest {
                    key: rest.to_string(),
                })
                .await
            {
                Ok(r) => format!("{}\n", String::from_utf8_lossy(&r.into_inner().value)),
                Err(s) if s.code() == tonic::Code::NotFound => "(not found)\n".to_string(),
                Err(s) => format!("error: {}\n", s.message()),
            },
            "delete" | "del" if !rest.is_empty() => match client
                .delete(pb::DeleteRequest {
                    key: rest.to_string(),
                })
                .await
            {
                Ok(r) => format!("OK deleted on {} node(s)\n", r.into_inner().replicas),
                Err(s) => format!("error: {}\n", s.message()),
            },
            "locate" if !rest.is_empty() => match client
                .locate(pb::LocateRequest {
                    key: rest.to_string(),
                })
                .await
            {
                Ok(r) => format_locate(&r.into_inner()),
                Err(s) => format!("error: {}\n", s.message()),
            },
            "routes" => match client.routing_table(pb::RoutingTableRequest {}).await {
                Ok(r) => format_routes(&r.into_inner()),
                Err(s) => format!("error: {}\n", s.message()),
            },
            "info" => match client.info(pb::InfoRequest {}).await {
                Ok(r) => format_info(&r.into_inner()),
                Err(s) => format!("error: {}\n", s.message()),
            },
            "get" | "delete" | "del" | "locate" => format!("usage: {cmd} KEY\n"),
            other => format!("unknown command {other:?}; type help\n"),
        };
        output.write_all(answer.as_bytes()).await?;
    }
    output.write_all(b"bye\n").await?;
    output.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split_key;

    #[test]
    fn a_value_is_kept_as_typed() {
        assert_eq!(split_key("k v"), Some(("k", "v")));
        assert_eq!(split_key("k  two  spaces  "), Some(("k", " two  spaces  ")));
        assert_eq!(split_key("k\tv"), Some(("k", "v")));
        assert_eq!(split_key("k "), Some(("k", "")));
        assert_eq!(split_key("k"), None);
    }
}
