//! `kademlia shell`: an interactive console reading one command per line from any input.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::client::{connect, format_info, format_locate, format_routes};
use crate::pb;

const HELP: &str = "commands:
  set KEY VALUE      store VALUE (rest of the line) under KEY
  get KEY            print KEY's value
  delete KEY         delete KEY
  locate KEY         the k closest nodes to KEY and which hold it
  routes             this node's routing table
  info               this node's id, address and counters
  help               this text
  quit               leave (end of input works too)
";

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
        let Some(line) = lines.next_line().await? else {
            break;
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        let answer = match cmd {
            "quit" | "exit" => break,
            "help" => HELP.to_string(),
            "set" | "put" => match rest.split_once(char::is_whitespace) {
                Some((key, value)) => {
                    let req = pb::PutRequest {
                        key: key.to_string(),
                        value: value.trim().as_bytes().to_vec(),
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
