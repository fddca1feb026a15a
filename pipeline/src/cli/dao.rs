//! `autonomy dao`: delegate, propose, vote, queue, execute, status, list.

use std::process::ExitCode;
use std::time::Duration;

use alloy_primitives::U256;
use anyhow::{Context, Result, bail};
use autonomy_contracts::{Action, Deployment, Proposal, ProposalState, Support};
use autonomy_pipeline::economy::units::format_auton;
use clap::Subcommand;

use super::session::{AnyLedger, Project, Session};

/// `autonomy dao …`.
#[derive(Subcommand)]
pub enum DaoCommand {
    /// Give your votes to an account (yourself included).
    Delegate {
        /// Who votes with your Auton.
        to: String,
        #[command(flatten)]
        project: Project,
    },
    /// Propose making a version the active version of a community model.
    ProposeActivate {
        /// The model id.
        model: u64,
        /// The version id.
        version: u64,
        /// What voters read (default: generated).
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        project: Project,
    },
    /// Propose new marketplace fees, in basis points (each at most 1,000).
    ProposeFees {
        /// Treasury fee.
        fee: u16,
        /// Model contributors' fee.
        contributor_fee: u16,
        /// What voters read (default: generated).
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        project: Project,
    },
    /// Vote on a proposal: `for`, `against` or `abstain`.
    Vote {
        /// The proposal id, or a unique prefix of it.
        id: String,
        /// How.
        support: String,
        #[command(flatten)]
        project: Project,
    },
    /// Queue a passed proposal in the timelock.
    Queue {
        /// The proposal id, or a unique prefix of it.
        id: String,
        #[command(flatten)]
        project: Project,
    },
    /// Execute a queued proposal once its delay has passed.
    Execute {
        /// The proposal id, or a unique prefix of it.
        id: String,
        #[command(flatten)]
        project: Project,
    },
    /// One proposal: its state, votes against quorum, deadlines and what to do next.
    Status {
        /// The proposal id, or a unique prefix of it.
        id: String,
        #[command(flatten)]
        project: Project,
    },
    /// Every proposal, its state and its deadlines.
    List {
        #[command(flatten)]
        project: Project,
    },
}

/// The proposal whose id is `id` or starts with it.
fn find_proposal(ledger: &AnyLedger, id: &str) -> Result<(U256, autonomy_contracts::Proposal)> {
    let matching: Vec<_> = ledger
        .proposals()?
        .into_iter()
        .filter(|(pid, _)| pid.to_string().starts_with(id))
        .collect();
    match matching.len() {
        1 => Ok(matching.into_iter().next().expect("one match")),
        0 => bail!("no proposal {id}: `autonomy dao list` shows them"),
        n => bail!("{n} proposals start with {id}: give more digits"),
    }
}

/// `when` relative to the chain's `now`: `in 9m 59s` or `10m ago`.
fn relative(when: u64, now: u64) -> String {
    let span = |seconds: u64| humantime::format_duration(Duration::from_secs(seconds)).to_string();
    match when.cmp(&now) {
        std::cmp::Ordering::Greater => format!("in {}", span(when - now)),
        std::cmp::Ordering::Less => format!("{} ago", span(now - when)),
        std::cmp::Ordering::Equal => "now".into(),
    }
}

/// `autonomy dao …`.
pub fn dao(command: DaoCommand) -> Result<ExitCode> {
    match command {
        DaoCommand::Delegate { to, project } => {
            let mut session = Session::open(&project)?;
            let from = session.account(&project.from)?;
            let to = session.account(&to)?;
            session.ledger.delegate(from, to)?;
            println!(
                "{from} now votes through {to} ({} of votes)",
                format_auton(session.ledger.votes(to)?)
            );
        }
        DaoCommand::ProposeActivate {
            model,
            version,
            description,
            project,
        } => propose(
            &project,
            |d| Action::set_active_version(d, U256::from(model), U256::from(version)),
            description.unwrap_or_else(|| format!("Make version {version} the active version of model {model}")),
        )?,
        DaoCommand::ProposeFees {
            fee,
            contributor_fee,
            description,
            project,
        } => propose(
            &project,
            |d| Action::set_fees(d, fee, contributor_fee),
            description.unwrap_or_else(|| {
                format!("Set the marketplace fee to {fee} bps and the contributors' fee to {contributor_fee} bps")
            }),
        )?,
        DaoCommand::Vote {
            id,
            support,
            project,
        } => {
            let mut session = Session::open(&project)?;
            let from = session.account(&project.from)?;
            let (id, _) = find_proposal(&session.ledger, &id)?;
            let support = match support.as_str() {
                "for" => Support::For,
                "against" => Support::Against,
                "abstain" => Support::Abstain,
                other => bail!("`{other}`: vote for, against or abstain"),
            };
            let receipt = session
                .ledger
                .vote(from, id, support)
                .context("cannot vote")?;
            let cast = receipt.events::<autonomy_contracts::bindings::AutonomyGovernor::VoteCast>();
            let weight = cast.first().map(|c| c.weight).unwrap_or_default();
            println!(
                "{from} voted {support:?} on {id} with {} of votes",
                format_auton(weight)
            );
        }
        DaoCommand::Queue { id, project } => {
            let mut session = Session::open(&project)?;
            let from = session.account(&project.from)?;
            let (id, proposal) = find_proposal(&session.ledger, &id)?;
            session
                .ledger
                .queue(from, &proposal)
                .context("cannot queue (has the vote ended and passed? `autonomy dao list`)")?;
            let delay = session.ledger.timelock_delay()?;
            println!(
                "queued {id}; executable in {}",
                humantime::format_duration(Duration::from_secs(delay))
            );
        }
        DaoCommand::Execute { id, project } => {
            let mut session = Session::open(&project)?;
            let from = session.account(&project.from)?;
            let (id, proposal) = find_proposal(&session.ledger, &id)?;
            session
                .ledger
                .execute(from, &proposal)
                .context("cannot execute (is it queued and its delay over? `autonomy dao list`)")?;
            println!("executed {id}: {}", proposal.description);
        }
        DaoCommand::Status { id, project } => {
            let session = Session::open(&project)?;
            let (id, proposal) = find_proposal(&session.ledger, &id)?;
            status(&session.ledger, id, &proposal)?;
        }
        DaoCommand::List { project } => {
            let session = Session::open(&project)?;
            let ledger = &session.ledger;
            let now = ledger.timestamp()?;
            let proposals = ledger.proposals()?;
            if proposals.is_empty() {
                println!("no proposals");
            }
            for (id, proposal) in proposals {
                let state = ledger.proposal_state(id)?;
                let (start, end) = ledger.proposal_window(id)?;
                println!("{id}\n  {:?}: {}", state, proposal.description);
                println!(
                    "  voting opens {}, closes {}",
                    relative(start, now),
                    relative(end, now)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `dao status`.
fn status(ledger: &AnyLedger, id: U256, proposal: &Proposal) -> Result<()> {
    let now = ledger.timestamp()?;
    let state = ledger.proposal_state(id)?;
    let (start, end) = ledger.proposal_window(id)?;
    let tally = ledger.proposal_votes(id)?;
    println!("proposal {id}");
    println!("  {}", proposal.description);
    println!("  state    {state:?}");
    let tense = |when: u64, future: &'static str, past: &'static str| {
        if when > now { future } else { past }
    };
    println!(
        "  voting   {} {}, {} {}",
        tense(start, "opens", "opened"),
        relative(start, now),
        tense(end, "closes", "closed"),
        relative(end, now)
    );
    println!(
        "  votes    for {}, against {}, abstain {}",
        format_auton(tally.for_votes),
        format_auton(tally.against),
        format_auton(tally.abstain)
    );
    if let Some(quorum) = ledger.proposal_quorum(id)? {
        let counted = tally.for_votes + tally.abstain;
        let reached = if counted >= quorum {
            "reached"
        } else {
            "not reached"
        };
        println!(
            "  quorum   {} (for + abstain: {}, {reached})",
            format_auton(quorum),
            format_auton(counted)
        );
    }
    let short = &id.to_string()[..12];
    let next = match state {
        ProposalState::Pending => format!("votes open {}", relative(start, now)),
        ProposalState::Active => {
            format!("`autonomy dao vote {short} for|against|abstain` until it closes")
        }
        ProposalState::Succeeded => format!("passed: `autonomy dao queue {short}`"),
        ProposalState::Queued => match ledger.proposal_eta(id)? {
            Some(eta) if eta > now => format!(
                "`autonomy dao execute {short}` {} (timelock)",
                relative(eta, now)
            ),
            _ => format!("`autonomy dao execute {short}` now"),
        },
        ProposalState::Defeated => "nothing: it was voted down or missed quorum".into(),
        ProposalState::Canceled | ProposalState::Expired | ProposalState::Executed => {
            "nothing: it is over".into()
        }
    };
    println!("  next     {next}");
    Ok(())
}

/// Proposes the one action `action` makes from the deployment, and says when voting opens.
fn propose(
    project: &Project,
    action: impl FnOnce(&Deployment) -> Action,
    description: String,
) -> Result<()> {
    let mut session = Session::open(project)?;
    let from = session.account(&project.from)?;
    let action = action(session.ledger.deployment());
    let proposal = Proposal::new(vec![action], description);
    let id = session
        .ledger
        .propose(from, &proposal)
        .context("cannot propose")?
        .value;
    print_proposed(&session.ledger, id)
}

fn print_proposed(ledger: &AnyLedger, id: U256) -> Result<()> {
    let (start, end) = ledger.proposal_window(id)?;
    let now = ledger.timestamp()?;
    println!("proposed {id}");
    println!(
        "voting opens {} and closes {}",
        relative(start, now),
        relative(end, now)
    );
    Ok(())
}
