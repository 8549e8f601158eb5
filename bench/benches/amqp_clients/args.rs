//! The command line: how long and how often each client runs, and on how many tasks and
//! channels.

use std::time::Duration;

use anyhow::{Context, bail};

/// The command line; cargo's own `--bench` is ignored, any other unknown flag refused.
pub struct Args {
    pub duration: Duration,
    pub runs: usize,
    pub concurrency: usize,
    pub channels: usize,
    pub amqp_url: String,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(5),
            runs: 3,
            concurrency: 32,
            channels: 1,
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
        }
    }
}

impl Args {
    pub fn parse(mut raw: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut args = Self::default();
        while let Some(arg) = raw.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (arg, None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| raw.next())
                    .with_context(|| format!("{name} needs a value"))
            };
            match name.as_str() {
                "--duration" => {
                    args.duration = Duration::try_from_secs_f64(number(value()?, &name)?)?;
                }
                "--runs" => args.runs = number(value()?, &name)?,
                "--concurrency" => args.concurrency = number(value()?, &name)?,
                "--channels" => args.channels = number(value()?, &name)?,
                "--amqp-url" => args.amqp_url = value()?,
                // cargo bench passes it to every bench target.
                "--bench" => {}
                // "The file" is main.rs, whose doc lists the flags.
                _ => bail!("unknown flag {name}; see the comment at the top of the file"),
            }
        }
        if args.duration.is_zero() || args.runs == 0 || args.concurrency == 0 || args.channels == 0
        {
            bail!("--duration, --runs, --concurrency and --channels must be positive");
        }
        Ok(args)
    }
}

fn number<T>(text: String, flag: &str) -> anyhow::Result<T>
where
    T: std::str::FromStr<Err: std::error::Error + Send + Sync + 'static>,
{
    text.parse()
        .with_context(|| format!("{flag} takes a number, not {text:?}"))
}
