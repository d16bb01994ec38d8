//! `loadgen squeezenet`: the prediction-serving case study. One client
//! calls the pipeline DAG (preprocess → 3 SqueezeNet replicas in parallel →
//! average → top-5) on a running node, and the same run measures the two
//! no-platform floors with the very same code (`models` crate) in this
//! process: the replicas one after another (the paper's "plain Python"
//! row), and the replicas on three threads. Phases alternate in rounds so
//! drift on a noisy machine hits all three alike.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use client::{Client, ClientOptions};
use hdrhistogram::Histogram;
use models::image_input::preprocess;
use models::onnx::Model;
use models::tensor::{average, format_ranked, from_bytes, parse_labels, top_k};
use serde_json::json;

use crate::report::histogram;

#[derive(Clone, Debug, clap::Args)]
pub struct SqueezeArgs {
    /// The secret for a node started with --auth-token-file (its first
    /// line). Default: the SQUALL_TOKEN environment variable.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// Any shard of the Squall node. The node should run at least as many
    /// executors as replicas (`--shards 1 --executors-per-shard 3`).
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub addr: String,
    /// Where squeezenet1.1_fp32.onnx, imagenet_labels.txt and the images are.
    #[arg(long, default_value = "../shared/models")]
    pub models_dir: PathBuf,
    /// The image to classify (default: kitten_224.png in --models-dir).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Measured pipeline calls (and as many of each floor).
    #[arg(long, default_value_t = 200)]
    pub calls: u64,
    /// Unmeasured calls of each phase first (executors load the model).
    #[arg(long, default_value_t = 10)]
    pub warmup: u64,
    /// Phases alternate in this many rounds.
    #[arg(long, default_value_t = 4)]
    pub rounds: u64,
    /// Model replicas per call.
    #[arg(long, default_value_t = 3)]
    pub replicas: u32,
    /// CI mode: 6 calls of each phase, 1 warm-up, 2 rounds (checks the
    /// whole path and the report; its numbers mean little).
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON object (last line).
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON result and an SVG latency CDF into this folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The DAG this mode registers.
pub const DAG: &str = "loadgen-predict";
const MODEL: &str = "squeezenet";

/// A replica thread: tensors in, model outputs out.
type Worker = (mpsc::SyncSender<Arc<Vec<u8>>>, mpsc::Receiver<Vec<u8>>);

/// The in-process pipeline: the same functions the node runs.
struct Local {
    labels: String,
    image: Vec<u8>,
    model: Model,
    /// Per replica: a thread with its own model state, fed a tensor.
    workers: Vec<Worker>,
}

impl Local {
    fn new(
        model_bytes: &[u8],
        labels: String,
        image: Vec<u8>,
        replicas: u32,
    ) -> anyhow::Result<Local> {
        let model = Model::load(model_bytes)?;
        let mut workers = Vec::new();
        for i in 0..replicas {
            let mut m = model.fork()?;
            let (tx, rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(1);
            let (out_tx, out_rx) = mpsc::sync_channel(1);
            std::thread::Builder::new()
                .name(format!("replica-{i}"))
                .spawn(move || {
                    for tensor in rx {
                        let out = m.run(&tensor).unwrap_or_default();
                        if out_tx.send(out).is_err() {
                            return;
                        }
                    }
                })?;
            workers.push((tx, out_rx));
        }
        parse_labels(&labels)?;
        Ok(Local {
            labels,
            image,
            model,
            workers,
        })
    }

    fn finish(&self, outputs: &[Vec<u8>]) -> anyhow::Result<String> {
        let refs: Vec<&[u8]> = outputs.iter().map(Vec::as_slice).collect();
        let probabilities = from_bytes(&average(&refs)?)?;
        let labels = parse_labels(&self.labels)?;
        Ok(format_ranked(&top_k(&probabilities, &labels, 5)?))
    }

    /// Replicas one after another; records each inference in `model_h`.
    fn sequential(&mut self, model_h: &mut Histogram<u64>) -> anyhow::Result<String> {
        let tensor = preprocess(&self.image)?;
        let mut outputs = Vec::with_capacity(self.workers.len());
        for _ in 0..self.workers.len() {
            let t0 = Instant::now();
            outputs.push(self.model.run(&tensor)?);
            model_h.record(t0.elapsed().as_nanos().max(1) as u64)?;
        }
        self.finish(&outputs)
    }

    /// Replicas on their threads at once.
    fn parallel(&mut self) -> anyhow::Result<String> {
        let tensor = Arc::new(preprocess(&self.image)?);
        for (tx, _) in &self.workers {
            tx.send(Arc::clone(&tensor))?;
        }
        let outputs = self
            .workers
            .iter()
            .map(|(_, rx)| rx.recv())
            .collect::<Result<Vec<_>, _>>()?;
        anyhow::ensure!(outputs.iter().all(|o| !o.is_empty()), "a replica failed");
        self.finish(&outputs)
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Runs the benchmark and prints its report.
pub fn run(args: &SqueezeArgs) -> anyhow::Result<()> {
    let (calls, warmup, rounds) = if args.quick {
        (6, 1, 2)
    } else {
        (args.calls, args.warmup, args.rounds.max(1))
    };
    anyhow::ensure!(calls > 0, "--calls must be at least 1");
    let dir = &args.models_dir;
    let model_bytes = read(&dir.join("squeezenet1.1_fp32.onnx"))?;
    let labels = read(&dir.join("imagenet_labels.txt"))?;
    let image_path = args
        .image
        .clone()
        .unwrap_or_else(|| dir.join("kitten_224.png"));
    let image = read(&image_path)?;
    let mut local = Local::new(
        &model_bytes,
        String::from_utf8(labels.clone()).context("labels are not UTF-8")?,
        image.clone(),
        args.replicas,
    )?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let opts = ClientOptions {
        timeout: std::time::Duration::from_secs(30),
        client_name: "loadgen-squeezenet".into(),
        token: client::load_token(args.token_file.as_deref()).map_err(anyhow::Error::msg)?,
        ..ClientOptions::default()
    };
    let mut client: Client = rt
        .block_on(Client::connect(&args.addr, opts))
        .with_context(|| format!("connecting to {}", args.addr))?;
    rt.block_on(async {
        client.put_model(MODEL, &model_bytes, Some(&labels)).await?;
        client
            .register_dag(client::pipeline::prediction_dag(DAG, MODEL, args.replicas))
            .await
    })?;
    let call = || client::pipeline::prediction_call(DAG, MODEL, image.clone(), 0);

    let (mut seq_h, mut par_h, mut pipe_h, mut model_h) =
        (histogram(), histogram(), histogram(), histogram());
    let mut scratch = histogram();
    let (mut seq_out, mut par_out, mut pipe_out) = (String::new(), String::new(), Vec::new());
    for _ in 0..warmup {
        local.sequential(&mut scratch)?;
        local.parallel()?;
        pipe_out = rt.block_on(client.call_dag_with(call()))?;
    }
    let per_round = calls.div_ceil(rounds);
    for _ in 0..rounds {
        for _ in 0..per_round {
            let t0 = Instant::now();
            seq_out = local.sequential(&mut model_h)?;
            seq_h.record(t0.elapsed().as_nanos().max(1) as u64)?;
        }
        for _ in 0..per_round {
            let t0 = Instant::now();
            par_out = local.parallel()?;
            par_h.record(t0.elapsed().as_nanos().max(1) as u64)?;
        }
        for _ in 0..per_round {
            let t0 = Instant::now();
            pipe_out = rt.block_on(client.call_dag_with(call()))?;
            pipe_h.record(t0.elapsed().as_nanos().max(1) as u64)?;
        }
    }
    let pipe_text = String::from_utf8_lossy(&pipe_out).into_owned();
    anyhow::ensure!(
        pipe_text == seq_out && seq_out == par_out,
        "the node and the in-process pipelines disagree:\n{pipe_text}\nvs\n{seq_out}"
    );
    let top = pipe_text.lines().next().unwrap_or_default().to_owned();
    let (p50, p99) = (us(&pipe_h, 0.5), us(&pipe_h, 0.99));
    let (s50, s99) = (us(&seq_h, 0.5), us(&seq_h, 0.99));
    let (q50, q99) = (us(&par_h, 0.5), us(&par_h, 0.99));
    let report = json!({
        "mode": "squeezenet", "image": image_path.display().to_string(), "top1": top,
        "calls": pipe_h.len(), "replicas": args.replicas, "rounds": rounds,
        "p50_us": p50, "p99_us": p99,
        "sequential_p50_us": s50, "sequential_p99_us": s99,
        "parallel_p50_us": q50, "parallel_p99_us": q99,
        "model_p50_us": us(&model_h, 0.5), "model_p99_us": us(&model_h, 0.99),
        "ratio_p50_to_sequential": p50 / s50,
        "overhead_p50_us": p50 - q50,
    });
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("squeezenet.json"), format!("{report}\n"))?;
        let title = format!(
            "SqueezeNet pipeline ({} replicas): latency CDF, {} calls each",
            args.replicas,
            pipe_h.len()
        );
        crate::report::write_cdf_svg(
            &dir.join("squeezenet-cdf.svg"),
            &title,
            &[
                ("Squall pipeline (DAG on the node)", &pipe_h),
                ("in-process, replicas on threads (floor)", &par_h),
                ("in-process, sequential", &seq_h),
            ],
        )?;
    }
    if args.json {
        println!("{report}");
    } else {
        let ms = |v: f64| format!("{:.1} ms", v / 1000.0);
        println!(
            "SqueezeNet 1.1 pipeline, {} replicas, {} calls of each, image {}: {top}",
            args.replicas,
            pipe_h.len(),
            image_path.display()
        );
        println!("| system | median | p99 |");
        println!("| --- | --- | --- |");
        println!("| Squall pipeline (this run) | {} | {} |", ms(p50), ms(p99));
        println!(
            "| in-process, replicas on threads (this run, the floor) | {} | {} |",
            ms(q50),
            ms(q99)
        );
        println!(
            "| in-process, sequential (this run) | {} | {} |",
            ms(s50),
            ms(s99)
        );
        println!("| Cloudburst (paper) | 90.6 ms | 122.9 ms |");
        println!("| plain Python, sequential (paper) | 153.8 ms | 156.3 ms |");
        println!("| AWS SageMaker (paper) | 282.2 ms | 361.7 ms |");
        println!(
            "pipeline / sequential: {:.2}x at the median; overhead over the parallel floor: {:.2} ms; one inference (tract): {} median",
            p50 / s50,
            (p50 - q50) / 1000.0,
            ms(us(&model_h, 0.5))
        );
    }
    Ok(())
}
