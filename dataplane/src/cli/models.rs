//! `squall model` (store models, register the prediction pipeline) and
//! `squall predict` (run it).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use client::Client;
use serde_json::json;

use super::output::{emit, note};
use super::{connect_blocking, Conn, ADDR_DEFAULT};

#[derive(Clone, Debug, Subcommand)]
pub(super) enum ModelCommand {
    /// Store the ONNX model in FILE as NAME (in the KVS, chunked), with its
    /// class labels, and register function NAME running it: one argument, the
    /// input tensor (little-endian f32); the result, the output tensor.
    /// Executors load it once, on first use, and again after a new `put`.
    Put {
        name: String,
        file: PathBuf,
        /// Class labels, one `index,label` line per class (e.g. imagenet_labels.txt).
        #[arg(long)]
        labels: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Register DAG --dag: preprocess → --replicas parallel uses of model
    /// --model on different executors → average → top5 (with the model's labels).
    Pipeline {
        #[arg(long, default_value = "predict")]
        dag: String,
        #[arg(long, default_value = "squeezenet")]
        model: String,
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=i64::from(client::pipeline::REPLICAS_MAX)))]
        replicas: u32,
        #[command(flatten)]
        conn: Conn,
    },
}

pub(super) fn run(cmd: ModelCommand) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Put {
            name,
            file,
            labels,
            conn,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let labels = labels
                .map(|p| std::fs::read(&p).with_context(|| format!("reading {}", p.display())))
                .transpose()?;
            let size = bytes.len();
            let has_labels = labels.is_some();
            let dags = connect_blocking(&conn, "squall-cli", async |c: &mut Client| {
                c.put_model(&name, &bytes, labels.as_deref()).await?;
                // Only for the hint below: a failure here is no failure of the put.
                Ok(c.list_dags().await.unwrap_or_default())
            })?;
            emit(
                conn.json,
                &json!({"model": name, "bytes": size, "ok": true}),
                &format!("OK: model {name} ({size} bytes) stored; function {name} registered"),
            )?;
            let addr = if conn.addr == ADDR_DEFAULT {
                String::new()
            } else {
                format!(" --addr {}", conn.addr)
            };
            let model_flag = if name == "squeezenet" {
                String::new()
            } else {
                format!(" --model {name}")
            };
            if !has_labels {
                note(&format!(
                    "hint: `squall predict` needs the model's class labels: store them with \
                     `squall model put {name} FILE --labels LABELS{addr}`, then run \
                     `squall model pipeline{model_flag}{addr}`"
                ));
            } else if !dags.iter().any(|d| d == "predict") {
                note(&format!(
                    "hint: `squall model pipeline{model_flag}{addr}` registers the DAG that \
                     `squall predict IMAGE` runs"
                ));
            }
        }
        ModelCommand::Pipeline {
            dag,
            model,
            replicas,
            conn,
        } => {
            let def = client::pipeline::prediction_dag(&dag, &model, replicas);
            connect_blocking(&conn, "squall-cli", async |c: &mut Client| {
                if c.get(&wire::model::labels_key(&model)).await?.is_none() {
                    anyhow::bail!(
                        "model {model:?} has no labels stored; run `squall model put {model} FILE --labels LABELS`"
                    );
                }
                Ok(c.register_dag(def).await?)
            })?;
            emit(conn.json, &json!({"dag": dag, "ok": true}), "OK")?;
        }
    }
    Ok(())
}

/// Runs the prediction pipeline on IMAGE and prints the top-5 classes
/// (`squall predict`).
pub(super) fn predict(
    image: &Path,
    dag: &str,
    model: &str,
    call_timeout_ms: u32,
    conn: &Conn,
) -> anyhow::Result<u8> {
    let bytes = std::fs::read(image).with_context(|| format!("reading {}", image.display()))?;
    let call = client::pipeline::prediction_call(dag, model, bytes, call_timeout_ms);
    let out = connect_blocking(conn, "squall-cli", async |c: &mut Client| {
        Ok(c.call_dag_with(call).await?)
    })?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let ranked: Vec<serde_json::Value> = ::models::tensor::parse_ranked(&text)?
        .into_iter()
        .map(|(class, p, label)| json!({"class": class, "probability": p, "label": label}))
        .collect();
    emit(
        conn.json,
        &json!({"image": image.display().to_string(), "top5": ranked}),
        text.trim_end(),
    )?;
    Ok(0)
}
