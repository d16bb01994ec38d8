//! Chains of one DAG call's functions, sent node to node.
//!
//! A chain is functions that follow one another with nothing in between —
//! each the only input of the next ([`executor::run::chain`]) — all
//! planned on other nodes than the one running the call (A). A sends the
//! whole chain to the first function's node (B) as `RunChain`, in segments
//! of consecutive functions on one node, with a token. B runs its segment
//! and sends the rest on to the next segment's node (C), with the session
//! as A sent it and what B's segment added; C runs under both, and so on.
//! The last node sends the outcome straight to A (`ChainDone`, with the
//! token): A → B → C → A, three messages where a trigger sent from A and
//! answered back, one function at a time, takes four.
//!
//! Neither `RunChain` nor `ChainDone` is answered: every outcome is a
//! `ChainDone` to A. A node that cannot run its segment (a function
//! failed, bad input) or send the rest on (the next node unreachable)
//! sends the error; A takes it as a single step's (`call.rs`): the call
//! runs again, or fails. A node that refuses its segment as overloaded
//! (its executors over the load threshold) runs nothing and sends where
//! the chain stopped; A runs the rest itself. A node lost while it holds
//! the chain loses it: A ends the run when that node leaves its view, or
//! is there again as another incarnation (restarted at its address), or
//! at the deadline; and the run runs again (`retries`). A link its peer
//! closed while idle is not used for these sends, so a peer that stopped
//! is found at once.
//!
//! A keeps each chain's token until its outcome comes or its run ends:
//! at most [`CHAINS_IN_FLIGHT_MAX`] per node, past which a call's
//! functions go one at a time.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use executor::dag::{Dag, DagSpec, FunctionOptions};
use executor::function::FnError;
use executor::limits::DAG_FUNCTIONS_MAX;
use executor::run::{Arg, Trigger};
use executor::session::Session;
use futures_channel::mpsc::UnboundedSender;
use wire::message as w;
use wire::Status;

use super::pool::{dispatch_here, Away, Here, Run};
use super::requests::{args_of, rerun_panics, text, Answer};
use super::ShardFunctions;
use crate::error::NodeError;
use crate::limits::CHAINS_IN_FLIGHT_MAX;

/// The chains this node's calls sent away, by token: where each one's
/// outcome goes, and its functions.
#[derive(Debug, Default)]
pub(super) struct Chains {
    awaited: Mutex<HashMap<u64, Awaited>>,
}

/// Where a chain's outcome goes, its functions, and the nodes it goes
/// through (address, and the node id and incarnation there).
type Awaited = (
    UnboundedSender<Away>,
    Vec<usize>,
    Vec<(SocketAddr, Identity)>,
);

/// A member's node id and incarnation.
type Identity = (u64, u64);

impl Chains {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Awaited>> {
        // No method panics midway: a poisoned lock holds a whole map.
        self.awaited.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A token for `chain`, whose outcome goes to `to`; `None` when
    /// [`CHAINS_IN_FLIGHT_MAX`] chains of runs still waiting are out.
    fn expect(
        &self,
        to: UnboundedSender<Away>,
        chain: Vec<usize>,
        nodes: Vec<(SocketAddr, Identity)>,
    ) -> Option<u64> {
        let mut awaited = self.lock();
        if awaited.len() >= CHAINS_IN_FLIGHT_MAX {
            // Those of runs over: their outcome was lost, or never came.
            awaited.retain(|_, (to, ..)| !to.is_closed());
            if awaited.len() >= CHAINS_IN_FLIGHT_MAX {
                return None;
            }
        }
        let token = loop {
            match getrandom::u64() {
                Ok(0) => {}
                Ok(t) if !awaited.contains_key(&t) => break t,
                Ok(_) => {}
                Err(_) => return None,
            }
        };
        awaited.insert(token, (to, chain, nodes));
        Some(token)
    }

    /// The chains that go through a node the view no longer holds (it
    /// failed, or left, or started again: `identity` gives the member the
    /// view holds at an address) end: their runs run again (a chain that
    /// node held is lost with it).
    pub(super) fn members_changed(&self, identity: impl Fn(SocketAddr) -> Option<Identity>) {
        let mut lost = Vec::new();
        self.lock().retain(|_, (to, chain, nodes)| {
            let Some(&(gone, _)) = nodes.iter().find(|&&(n, i)| identity(n) != Some(i)) else {
                return true;
            };
            lost.push((to.clone(), std::mem::take(chain), gone));
            false
        });
        for (to, chain, gone) in lost {
            let msg = format!(
                "{gone} left the cluster, or restarted, while a chain of this call went through it"
            );
            let e = NodeError::retriable(Status::Unavailable, msg);
            let outcome = w::ChainOutcome::Failed(crate::transport::error_body(&e));
            let _ = to.unbounded_send(Away::Chain { chain, outcome });
        }
    }

    /// Hands chain `token`'s outcome to its run; false when no run here
    /// awaits it (over, or a second copy).
    fn arrived(&self, token: u64, outcome: w::ChainOutcome) -> bool {
        let Some((to, chain, _)) = self.lock().remove(&token) else {
            return false;
        };
        to.unbounded_send(Away::Chain { chain, outcome }).is_ok()
    }
}

/// Consecutive functions of a chain on one node.
#[derive(Debug)]
struct Segment {
    node: SocketAddr,
    functions: Vec<String>,
}

fn wire_segments<'a>(segments: impl IntoIterator<Item = &'a Segment>) -> Vec<w::ChainSegment> {
    (segments.into_iter())
        .map(|s| w::ChainSegment {
            node: s.node.to_string().into_bytes(),
            functions: s.functions.iter().map(|f| f.as_bytes().to_vec()).collect(),
        })
        .collect()
}

/// The milliseconds left until `deadline`, at least 1.
fn left_ms(deadline: Instant) -> u32 {
    let ms = deadline
        .saturating_duration_since(Instant::now())
        .as_millis();
    u32::try_from(ms).unwrap_or(u32::MAX).max(1)
}

/// The session a chain's segment runs under: the one the calling node
/// sent, with what the chain's earlier segments added.
fn session_of(sent: &[u8], added: &[u8]) -> Result<Session, NodeError> {
    let session = Session::decode(sent).map_err(|e| NodeError::new(Status::InvalidArgument, e))?;
    if !added.is_empty() {
        session.absorb(added).map_err(|source| {
            NodeError::from(FnError::Store {
                function: "(a chain's session)".into(),
                source,
            })
        })?;
    }
    Ok(session)
}

/// A chain at one of its nodes.
#[derive(Debug)]
struct Leg {
    /// The segments still to run, the first here.
    segments: VecDeque<Segment>,
    /// The first function's arguments.
    args: Vec<Arg>,
    /// The session as the calling node sent it, and what the chain added.
    sent: Vec<u8>,
    added: Vec<u8>,
    /// The functions of the chain that ran before.
    ran: u32,
    deadline: Instant,
    reply_to: SocketAddr,
    token: u64,
}

impl ShardFunctions {
    /// Sends the functions of `chain` (planned on other nodes; the first
    /// triggered with `args`) node to node; their outcome comes back to the
    /// run as one ([`Away::Chain`]). Sent one at a time when this node
    /// cannot take one more chain's outcome.
    pub(super) fn send_chain(
        &self,
        run: &Arc<Run>,
        chain: Vec<usize>,
        args: Vec<Arg>,
        deadline: Instant,
    ) -> Result<(), Vec<Arg>> {
        let Some(me) = self.remote.members.placement().my_addr() else {
            return Err(args);
        };
        let session = match run.session.encode() {
            Ok(s) => s,
            Err(source) => {
                let function = run.function(chain[0]).to_owned();
                let e = FnError::Store { function, source };
                let here = &mut Here::Shard(&mut self.inline.borrow_mut());
                run.complete(chain[0], Err(e), here);
                return Ok(());
            }
        };
        let mut segments: Vec<Segment> = Vec::new();
        for &n in &chain {
            let (node, function) = (run.away_of(n).expect("planned away"), run.function(n));
            match segments.last_mut() {
                Some(s) if s.node == node => s.functions.push(function.to_owned()),
                _ => segments.push(Segment {
                    node,
                    functions: vec![function.to_owned()],
                }),
            }
        }
        let placement = self.remote.members.placement();
        let nodes = (segments.iter())
            .map(|s| (s.node, placement.identity(s.node).unwrap_or((0, 0))))
            .collect();
        let Some(token) = (self.platform.chains).expect(run.answers(), chain.clone(), nodes) else {
            return Err(args);
        };
        let first = segments[0].node;
        let request = w::Request::RunChain(Box::new(w::RunChain {
            segments: wire_segments(&segments),
            args: super::wire_args(args),
            timeout_ms: left_ms(deadline),
            session,
            added: Vec::new(),
            ran: 0,
            reply_to: me.to_string().into_bytes(),
            token,
        }));
        crate::shard::bump(&self.shard.stats().node_forwards);
        let (links, chains) = (self.remote.links.clone(), self.platform.chains.clone());
        glommio::spawn_local(async move {
            if let Err(e) = links.send(first, &request).await {
                let failed = w::ChainOutcome::Failed(crate::transport::error_body(&e));
                chains.arrived(token, failed);
            }
        })
        .detach();
        Ok(())
    }

    /// Completes the functions of `chain` of `run` as its outcome says.
    pub(super) fn chain_ended(&self, run: &Arc<Run>, chain: &[usize], outcome: w::ChainOutcome) {
        let to = run.away_of(chain[0]).expect("planned away");
        match outcome {
            w::ChainOutcome::Done(done) => {
                self.stepped(run, chain, to, w::Response::Stepped(done), Vec::new());
            }
            w::ChainOutcome::Failed(mut e) => {
                if e.code == Status::Overloaded.code() {
                    // Executors' queues full midway (not a refusal: part of
                    // the chain may have run): the run runs again.
                    e.code = Status::Unavailable.code();
                }
                self.stepped(run, chain, to, w::Response::Error(e), Vec::new());
            }
            w::ChainOutcome::Refused(r) => {
                let ran = r.ran as usize;
                let here = &mut Here::Shard(&mut self.inline.borrow_mut());
                let absorbed = match r.session.is_empty() {
                    true => Ok(()), // refused at once: nothing added
                    false => run.session.absorb(&r.session),
                };
                if let Err(source) = absorbed {
                    let function = run.function(chain[0]).to_owned();
                    return run.complete(chain[0], Err(FnError::Store { function, source }), here);
                }
                let args = super::args_from_wire(r.args);
                log::debug!(
                    "{}: a node refused {} as overloaded; it runs here",
                    self.shard.id(),
                    run.function(chain[ran.min(chain.len() - 1)])
                );
                match ran {
                    0 => dispatch_here(
                        run,
                        Trigger {
                            node: chain[0],
                            args,
                        },
                        here,
                    ),
                    // What ran: the refused one's input is the last one's result.
                    _ if ran < chain.len() => {
                        let input = super::inline_args(args).pop().unwrap_or_default();
                        run.complete_chain(&chain[..ran], Ok(input), here, Some(chain[ran]));
                    }
                    _ => {
                        let msg = format!("a chain of {} functions refused at {ran}", chain.len());
                        run.finish(Err(NodeError::retriable(Status::Internal, msg)));
                    }
                }
            }
        }
    }

    /// A chain's outcome, for a run of this node.
    pub(super) fn chain_done(&self, done: &w::ArchivedChainDone) -> Answer {
        let token = done.token.to_native();
        match wire::rkyv::deserialize::<_, wire::rkyv::rancor::Error>(&done.outcome) {
            Ok(outcome) => {
                if !self.platform.chains.arrived(token, outcome) {
                    log::debug!("{}: chain {token:#x} ended after its run", self.shard.id());
                }
            }
            Err(e) => log::warn!("{}: a chain's outcome dropped: {e}", self.shard.id()),
        }
        Answer::Never(None)
    }

    /// Runs the first segment of a chain another node sent, and sends the
    /// rest on; the outcome goes to the node running the call.
    pub(super) fn run_chain(self: &Rc<Self>, req: &w::ArchivedRunChain) -> Answer {
        let (me, token) = (self.clone(), req.token.to_native());
        let Ok(reply_to) = text(req.reply_to.as_slice()).parse::<SocketAddr>() else {
            let msg = "a chain with no node to report to";
            log::warn!("{}: {msg} dropped", self.shard.id());
            return Answer::Never(None);
        };
        let leg = self.leg(req, reply_to);
        Answer::Never(Some(Box::pin(async move {
            let outcome = match leg {
                Ok(leg) => match me.run_leg(leg).await {
                    Ok(None) => return,
                    Ok(Some(outcome)) => outcome,
                    Err(e) => w::ChainOutcome::Failed(crate::transport::error_body(&e)),
                },
                Err(outcome) => outcome,
            };
            let done = w::Request::ChainDone(w::ChainDone { token, outcome });
            if let Err(e) = me.remote.links.send(reply_to, &done).await {
                log::info!("{}: a chain's outcome was lost: {e}", me.shard.id());
            }
        })))
    }

    /// A chain's leg here, checked; or the chain's outcome now.
    fn leg(&self, req: &w::ArchivedRunChain, reply_to: SocketAddr) -> Result<Leg, w::ChainOutcome> {
        let failed = |status: Status, message: String| {
            w::ChainOutcome::Failed(w::ErrorBody {
                code: status.code(),
                message: message.into_bytes(),
            })
        };
        let mut segments = VecDeque::new();
        for s in req.segments.iter() {
            let node = text(s.node.as_slice()).parse::<SocketAddr>();
            let node = node.map_err(|e| {
                failed(
                    Status::InvalidArgument,
                    format!("a chain's segment names no node: {e}"),
                )
            })?;
            let functions: Vec<String> = s.functions.iter().map(|f| text(f)).collect();
            if functions.is_empty() {
                return Err(failed(Status::InvalidArgument, "an empty segment".into()));
            }
            segments.push_back(Segment { node, functions });
        }
        let count: usize = segments.iter().map(|s| s.functions.len()).sum();
        if segments.is_empty() || count > DAG_FUNCTIONS_MAX {
            let msg = format!("a chain has 1 to {DAG_FUNCTIONS_MAX} functions, not {count}");
            return Err(failed(Status::InvalidArgument, msg));
        }
        let registry = &self.platform.registry;
        if let Some(f) = segments[0].functions.iter().find(|f| !registry.contains(f)) {
            let msg = format!("no function named {f:?} is registered on this node");
            return Err(failed(Status::UnknownFunction, msg));
        }
        let args = args_of(&req.args);
        let ran = req.ran.to_native();
        let first = &segments[0].functions[0];
        if self.platform.pool.saturated()
            && !(self.platform).runs_inline(first, &FunctionOptions::default(), &args)
        {
            return Err(w::ChainOutcome::Refused(w::ChainRefused {
                ran,
                args: super::wire_args(args),
                session: req.added.to_vec(),
            }));
        }
        // Checked now, used where a segment reads or writes.
        if let Err(e) = session_of(&req.session, &req.added) {
            return Err(failed(e.status, e.message));
        }
        Ok(Leg {
            segments,
            args,
            sent: req.session.to_vec(),
            added: req.added.to_vec(),
            ran,
            deadline: super::call::deadline_after(req.timeout_ms.to_native()),
            reply_to,
            token: req.token.to_native(),
        })
    }

    /// Runs a leg's first segment here and sends the rest on: the chain's
    /// outcome when it ends here (`None`: sent on).
    async fn run_leg(&self, mut leg: Leg) -> Result<Option<w::ChainOutcome>, NodeError> {
        let segment = leg.segments.pop_front().expect("a segment");
        let ran = leg.ran + segment.functions.len() as u32;
        let session = (leg.sent.as_slice(), leg.added);
        let ran_here = self.run_segment(&segment.functions, leg.args, session, leg.deadline);
        let (output, mut added) = ran_here.await.map_err(rerun_panics)?;
        let Some(next) = leg.segments.front().map(|s| s.node) else {
            if added.is_empty() {
                // Inline functions only: nothing added.
                added = Session::default().encode().unwrap_or_default();
            }
            return Ok(Some(w::ChainOutcome::Done(w::Stepped {
                output,
                session: added,
            })));
        };
        let request = w::Request::RunChain(Box::new(w::RunChain {
            segments: wire_segments(&leg.segments),
            args: vec![w::Arg::Value(output)],
            timeout_ms: left_ms(leg.deadline),
            session: leg.sent,
            added,
            ran,
            reply_to: leg.reply_to.to_string().into_bytes(),
            token: leg.token,
        }));
        crate::shard::bump(&self.shard.stats().node_forwards);
        self.remote.links.send(next, &request).await?;
        Ok(None)
    }

    /// Runs `functions` one after another on this node, the first with
    /// `args`, under the session the calling node `sent` with what the
    /// chain `added`: their result, and what the chain added now. Inline
    /// functions (which use no session) run at once, here.
    async fn run_segment(
        &self,
        functions: &[String],
        mut args: Vec<Arg>,
        (sent, added): (&[u8], Vec<u8>),
        deadline: Instant,
    ) -> Result<(Vec<u8>, Vec<u8>), NodeError> {
        let inline = |f: &String, args: &[Arg]| {
            (self.platform).runs_inline(f, &FunctionOptions::default(), args)
        };
        if inline(&functions[0], &args) && functions.iter().all(|f| inline(f, &[])) {
            for f in functions {
                let out = self.invoke_inline(f, &super::inline_args(args))?;
                args = vec![Arg::Value(out)];
            }
            let output = super::inline_args(args).pop().unwrap_or_default();
            return Ok((output, added));
        }
        let names: Vec<String> = (functions.iter().enumerate())
            .map(|(i, f)| format!("{f}#{i}"))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let registry = &self.platform.registry;
        let dag = Dag::validate(&DagSpec::chain(&functions[0], &names), |f| {
            registry.contains(f)
        })
        .map_err(|e| NodeError::new(Status::UnknownFunction, e.to_string()))?;
        let args = HashMap::from([(names[0].to_owned(), args)]);
        let session = session_of(sent, &added)?;
        let ran = self.run_once(Arc::new(dag), args, deadline, (false, true), session);
        let (output, run) = ran.await?;
        let added = (run.session.encode())
            .map_err(|e| NodeError::new(Status::LimitExceeded, e.to_string()))?;
        Ok((output, added))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_channel::mpsc;

    #[test]
    fn an_outcome_goes_to_its_run_once() {
        let chains = Chains::default();
        let (tx, mut rx) = mpsc::unbounded();
        let token = chains.expect(tx, vec![1, 2], Vec::new()).unwrap();
        let failed = w::ChainOutcome::Failed(w::ErrorBody {
            code: 1,
            message: Vec::new(),
        });
        assert!(chains.arrived(token, failed.clone()));
        match rx.try_recv() {
            Ok(Away::Chain { chain, outcome }) => {
                assert_eq!((chain, outcome), (vec![1, 2], failed.clone()));
            }
            other => panic!("{other:?}"),
        }
        assert!(!chains.arrived(token, failed), "a second copy");
    }

    #[test]
    fn chains_in_flight_are_bounded_and_those_of_runs_over_make_room() {
        let chains = Chains::default();
        let (over, _) = mpsc::unbounded(); // its run is over: no receiver
        let (waiting, _rx) = mpsc::unbounded();
        for i in 0..CHAINS_IN_FLIGHT_MAX {
            let to = if i % 2 == 0 { &over } else { &waiting };
            assert!(chains.expect(to.clone(), vec![i], Vec::new()).is_some());
        }
        // Full: the half whose runs are over goes.
        assert!(chains
            .expect(waiting.clone(), vec![0], Vec::new())
            .is_some());
        assert_eq!(chains.lock().len(), CHAINS_IN_FLIGHT_MAX / 2 + 1);
        for i in 0..CHAINS_IN_FLIGHT_MAX / 2 - 1 {
            assert!(chains
                .expect(waiting.clone(), vec![i], Vec::new())
                .is_some());
        }
        assert_eq!(chains.expect(waiting, vec![0], Vec::new()), None);
    }

    #[test]
    fn a_chain_through_a_node_that_left_or_restarted_ends_at_once() {
        let chains = Chains::default();
        let (tx, mut rx) = mpsc::unbounded();
        let (b, c): (SocketAddr, SocketAddr) = (
            "127.0.0.2:1".parse().unwrap(),
            "127.0.0.3:1".parse().unwrap(),
        );
        let through_c = chains
            .expect(tx.clone(), vec![1, 2], vec![(b, (1, 1)), (c, (2, 1))])
            .unwrap();
        let on_b = chains
            .expect(tx.clone(), vec![3, 4], vec![(b, (1, 1))])
            .unwrap();
        chains.members_changed(|n| (n != c).then_some((if n == b { 1 } else { 2 }, 1)));
        match rx.try_recv() {
            Ok(Away::Chain {
                chain,
                outcome: w::ChainOutcome::Failed(e),
            }) => {
                assert_eq!(chain, [1, 2]);
                assert_eq!(e.code, Status::Unavailable.code());
            }
            other => panic!("{other:?}"),
        }
        assert!(rx.try_recv().is_err(), "the chain on B goes on");
        let done = w::ChainOutcome::Done(w::Stepped {
            output: Vec::new(),
            session: Vec::new(),
        });
        assert!(!chains.arrived(through_c, done.clone()));
        assert!(chains.arrived(on_b, done));
        assert!(matches!(
            rx.try_recv(),
            Ok(Away::Chain {
                outcome: w::ChainOutcome::Done(_),
                ..
            })
        ));

        // B restarts at its address: a new incarnation, the chain it
        // held is lost with the old one.
        let on_b = chains.expect(tx, vec![3, 4], vec![(b, (1, 1))]).unwrap();
        chains.members_changed(|_| Some((1, 1)));
        assert!(rx.try_recv().is_err(), "the same incarnation: it goes on");
        chains.members_changed(|_| Some((1, 2)));
        assert!(
            matches!(
                rx.try_recv(),
                Ok(Away::Chain {
                    outcome: w::ChainOutcome::Failed(_),
                    ..
                })
            ),
            "a chain through B's last incarnation ends"
        );
        let late = w::ChainOutcome::Done(w::Stepped {
            output: Vec::new(),
            session: Vec::new(),
        });
        assert!(!chains.arrived(on_b, late), "its outcome is no one's now");
    }
}
