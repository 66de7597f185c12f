//! `distribot schedule add|list|pause|resume|remove`: workflows started on
//! a cron cadence by the engines of a server or an installation.

use distribot::schedule::{CatchUp, Overlap, ScheduleField, ScheduleSpec, DEFAULT_TIMEZONE};
use distribot::time::Timestamp;
use distribot::views::ScheduleView;

use super::{print_json, print_table, with_target, OutputArgs};
use crate::cli::input::parse_data;
use crate::cli::settings::Connect;
use crate::cli::{CliError, CliResult, EXIT_OK};

#[derive(clap::Args)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    command: ScheduleCommand,
}

#[derive(clap::Subcommand)]
enum ScheduleCommand {
    /// Add a schedule: a registered workflow, started at each tick of a
    /// cron expression.
    Add(AddArgs),
    /// List the schedules, with their next tick and last flow.
    List(OutputArgs),
    /// Pause a schedule: its ticks start nothing until it is resumed.
    Pause(NameArgs),
    /// Resume a paused schedule from its next tick (the ticks that came
    /// while it was paused are not caught up).
    Resume(NameArgs),
    /// Remove a schedule; the flows it started stay.
    Remove(NameArgs),
}

#[derive(clap::Args)]
struct AddArgs {
    /// The schedule's name: letters, digits and `_ - . :`.
    name: String,
    /// The registered workflow each tick starts.
    #[arg(long)]
    workflow: String,
    /// When: 5 fields (minute hour day-of-month month day-of-week, such as
    /// "0 2 * * *"), 6 with seconds first ("*/10 * * * * *"), or a macro
    /// (@hourly, @daily, @weekly, @monthly, @yearly).
    #[arg(long)]
    cron: String,
    /// The data of every flow it starts: a JSON object, or @file.json.
    #[arg(long)]
    data: Option<String>,
    /// The time zone the cron expression reads in: an IANA name such as
    /// Europe/Lisbon.
    #[arg(long, default_value = DEFAULT_TIMEZONE)]
    tz: String,
    /// While the flow the schedule started last still runs, a tick starts
    /// nothing (skip) or another flow (allow).
    #[arg(long, default_value = "skip", value_parser = ["skip", "allow"])]
    overlap: String,
    /// The ticks missed while no engine ran are dropped (skip) or make one
    /// flow (one).
    #[arg(long = "catch-up", default_value = "skip", value_parser = ["skip", "one"])]
    catch_up: String,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Connect,
}

#[derive(clap::Args)]
struct NameArgs {
    /// The schedule's name.
    name: String,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Connect,
}

pub async fn schedule(args: ScheduleArgs) -> CliResult<i32> {
    match args.command {
        ScheduleCommand::Add(args) => add(args).await,
        ScheduleCommand::List(args) => list(args).await,
        ScheduleCommand::Pause(args) => pause(args, true).await,
        ScheduleCommand::Resume(args) => pause(args, false).await,
        ScheduleCommand::Remove(args) => remove(args).await,
    }
}

async fn add(args: AddArgs) -> CliResult<i32> {
    let spec = ScheduleSpec {
        name: args.name.clone(),
        workflow: args.workflow.clone(),
        cron: args.cron.clone(),
        timezone: args.tz.clone(),
        data: parse_data(args.data.as_deref())?,
        overlap: Overlap::parse(&args.overlap).unwrap_or_default(),
        catch_up: CatchUp::parse(&args.catch_up).unwrap_or_default(),
    };
    // Checked here too, to name the flag at fault; the server checks again.
    if let Err(error) = spec.clone().check(Timestamp::now()) {
        let flag = match error.field {
            ScheduleField::Name => "NAME",
            ScheduleField::Workflow => "--workflow",
            ScheduleField::Cron => "--cron",
            ScheduleField::Timezone => "--tz",
            ScheduleField::Data => "--data",
            ScheduleField::Overlap => "--overlap",
            ScheduleField::CatchUp => "--catch-up",
        };
        return Err(CliError::BadInput(format!("{flag}: {}", error.message)));
    }
    with_target(&args.connect, async |target| {
        let (created, schedule) = target.add_schedule(spec).await?;
        if args.json {
            print_json(&schedule)?;
        } else if created {
            println!(
                "added schedule `{}`: workflow `{}` at `{}` ({}); next tick {}",
                schedule.name,
                schedule.workflow,
                schedule.cron,
                schedule.timezone,
                shown(schedule.next_tick)
            );
        } else {
            println!(
                "schedule `{}` is kept as it was, with the same settings; next tick {}",
                schedule.name,
                shown(schedule.next_tick)
            );
        }
        Ok(EXIT_OK)
    })
    .await
}

async fn list(args: OutputArgs) -> CliResult<i32> {
    with_target(&args.connect, async |target| {
        let list = target.schedules().await?;
        if args.json {
            print_json(&list)?;
            return Ok(EXIT_OK);
        }
        let rows: Vec<[String; 7]> = list
            .schedules
            .iter()
            .map(|schedule| {
                [
                    schedule.name.clone(),
                    schedule.workflow.clone(),
                    schedule.cron.clone(),
                    schedule.timezone.clone(),
                    if schedule.paused { "paused" } else { "active" }.to_owned(),
                    shown(schedule.next_tick),
                    match (&schedule.last_flow, &schedule.last_skip) {
                        (_, Some(skip)) => format!("skipped: {skip}"),
                        (Some(flow), None) => flow.to_string(),
                        (None, None) => "-".to_owned(),
                    },
                ]
            })
            .collect();
        print_table(
            [
                "NAME",
                "WORKFLOW",
                "CRON",
                "TIMEZONE",
                "STATE",
                "NEXT TICK",
                "LAST",
            ],
            &rows,
        );
        Ok(EXIT_OK)
    })
    .await
}

async fn pause(args: NameArgs, paused: bool) -> CliResult<i32> {
    with_target(&args.connect, async |target| {
        let schedule = target.pause_schedule(&args.name, paused).await?;
        if args.json {
            print_json(&schedule)?;
        } else if paused {
            println!("paused schedule `{}`", schedule.name);
        } else {
            println!(
                "resumed schedule `{}`; next tick {}",
                schedule.name,
                shown(schedule.next_tick)
            );
        }
        Ok(EXIT_OK)
    })
    .await
}

async fn remove(args: NameArgs) -> CliResult<i32> {
    with_target(&args.connect, async |target| {
        let schedule: ScheduleView = target.remove_schedule(&args.name).await?;
        if args.json {
            print_json(&schedule)?;
        } else {
            println!(
                "removed schedule `{}` (the flows it started stay)",
                schedule.name
            );
        }
        Ok(EXIT_OK)
    })
    .await
}

fn shown(tick: Option<Timestamp>) -> String {
    tick.map(|tick| tick.to_string())
        .unwrap_or_else(|| "-".to_owned())
}
