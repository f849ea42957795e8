//! Host side of a guest suite: turns "this initramfs, these guest tests" into
//! `libtest-mimic` trials, so `cargo test` lists and counts every guest test on every
//! kernel as a test of its own.
//!
//! For a suite `exec` expecting tests `a` and `b` on kernels `6.12` and `6.1`, the trials
//! are `exec::6.12::boot`, `exec::6.12::a`, `exec::6.12::b`, and the same for `6.1`.
//! The first trial of a kernel to run builds the image (once per suite) and boots the
//! kernel (once per kernel); the others wait for that boot and read their result from
//! it. `boot` fails when the run failed (with the console's last lines), when the suite
//! reported a test it was not expected to, or when its counts disagree with its
//! results; it prints the boot time. With no cached kernels there is a single trial,
//! `<suite>::guest_kernels`, and it fails saying to run `scripts/setup`.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use libtest_mimic::{Failed, Trial};

use crate::TestbedError;
use crate::initramfs::Initramfs;
use crate::kernels::{GuestKernel, guest_kernels};
use crate::qemu::{GuestOutcome, GuestRun};

type ImageRecipe = dyn Fn() -> Result<Initramfs, TestbedError> + Send + Sync;
type RunTuning = dyn Fn(GuestRun) -> GuestRun + Send + Sync;

/// A guest test suite and the tests it is expected to report. See the
/// [module docs](self).
pub struct GuestSuite {
    name: String,
    expected: Vec<String>,
    recipe: Arc<ImageRecipe>,
    tuning: Arc<RunTuning>,
}

/// The image, built on first use and shared by every kernel's boot.
struct SharedImage {
    recipe: Arc<ImageRecipe>,
    built: OnceLock<Result<(tempfile::TempDir, PathBuf), String>>,
}

/// One kernel's boot, run on first use and shared by that kernel's trials.
struct KernelBoot {
    kernel: GuestKernel,
    image: Arc<SharedImage>,
    tuning: Arc<RunTuning>,
    outcome: OnceLock<Result<GuestOutcome, String>>,
}

impl GuestSuite {
    /// A suite called `name` whose image `recipe` describes (built once, lazily).
    pub fn new(
        name: &str,
        recipe: impl Fn() -> Result<Initramfs, TestbedError> + Send + Sync + 'static,
    ) -> Self {
        GuestSuite {
            name: name.to_owned(),
            expected: Vec::new(),
            recipe: Arc::new(recipe),
            tuning: Arc::new(|run| run),
        }
    }

    /// The guest tests the suite reports: one trial each per kernel.
    pub fn expect_tests(mut self, names: &[&str]) -> Self {
        self.expected.extend(names.iter().map(|n| (*n).to_owned()));
        self
    }

    /// Adjusts every run of this suite (kernel arguments, memory, time limit, ...).
    pub fn tune_runs(
        mut self,
        tuning: impl Fn(GuestRun) -> GuestRun + Send + Sync + 'static,
    ) -> Self {
        self.tuning = Arc::new(tuning);
        self
    }

    /// The trials for every cached kernel ([`guest_kernels`]).
    pub fn trials(&self) -> Vec<Trial> {
        self.trials_on(guest_kernels())
    }

    /// The trials for the given kernels; an error becomes one failing trial.
    pub fn trials_on(&self, kernels: Result<Vec<GuestKernel>, TestbedError>) -> Vec<Trial> {
        let kernels = match kernels {
            Ok(kernels) => kernels,
            Err(e) => {
                let message = e.to_string();
                return vec![Trial::test(
                    format!("{}::guest_kernels", self.name),
                    move || Err(message.into()),
                )];
            }
        };
        let image = Arc::new(SharedImage {
            recipe: Arc::clone(&self.recipe),
            built: OnceLock::new(),
        });
        let mut trials = Vec::new();
        for kernel in kernels {
            let prefix = format!("{}::{}", self.name, kernel.name);
            let boot = Arc::new(KernelBoot {
                kernel,
                image: Arc::clone(&image),
                tuning: Arc::clone(&self.tuning),
                outcome: OnceLock::new(),
            });
            let expected = self.expected.clone();
            let shared = Arc::clone(&boot);
            trials.push(Trial::test(format!("{prefix}::boot"), move || {
                check_boot(&shared, &expected)
            }));
            for test in &self.expected {
                let shared = Arc::clone(&boot);
                let test = test.clone();
                let boot_trial = format!("{prefix}::boot");
                trials.push(Trial::test(format!("{prefix}::{test}"), move || {
                    let outcome = shared.outcome().map_err(|e| {
                        let headline = e.lines().next().unwrap_or_default();
                        Failed::from(format!("{headline} (details in {boot_trial})"))
                    })?;
                    match outcome.result(&test) {
                        Some(result) if result.passed => Ok(()),
                        Some(result) => Err(result.message.clone().into()),
                        None => {
                            Err(format!("the guest suite reported no result for {test}").into())
                        }
                    }
                }));
            }
        }
        trials
    }
}

impl SharedImage {
    fn path(&self) -> Result<&PathBuf, &String> {
        self.built
            .get_or_init(|| {
                let dir = tempfile::Builder::new()
                    .prefix("driftwall-initramfs-")
                    .tempdir()
                    .map_err(|e| format!("creating a directory for the initramfs: {e}"))?;
                let path = dir.path().join("initramfs.cpio.gz");
                let image = (self.recipe)().map_err(|e| format!("preparing the initramfs: {e}"))?;
                image
                    .build(&path)
                    .map_err(|e| format!("building the initramfs: {e}"))?;
                Ok((dir, path))
            })
            .as_ref()
            .map(|(_, path)| path)
    }
}

impl KernelBoot {
    fn outcome(&self) -> Result<&GuestOutcome, &String> {
        self.outcome
            .get_or_init(|| {
                let image = self.image.path()?;
                let run = (self.tuning)(GuestRun::new(self.kernel.clone(), image.clone()));
                run.run()
                    .map_err(|e| format!("{} ({}): {e}", self.kernel.name, self.kernel.package))
            })
            .as_ref()
    }
}

fn check_boot(boot: &KernelBoot, expected: &[String]) -> Result<(), Failed> {
    let outcome = boot.outcome().map_err(|e| Failed::from(e.as_str()))?;
    let boot_time = outcome
        .boot_ms
        .map_or_else(|| "unknown".to_owned(), |ms| format!("{ms} ms"));
    println!(
        "guest {} ({}): /init started after {boot_time} of guest time; {} guest test(s), \
         {} failed; {:.1} s wall",
        boot.kernel.name,
        boot.kernel.package,
        outcome.results.len(),
        outcome.summary.failed,
        outcome.wall.as_secs_f64(),
    );
    let unexpected: Vec<&str> = outcome
        .results
        .iter()
        .map(|r| r.name.as_str())
        .filter(|name| !expected.iter().any(|e| e == name))
        .collect();
    if !unexpected.is_empty() {
        return Err(format!(
            "the guest suite reported tests the host does not expect (add them to \
             expect_tests): {}",
            unexpected.join(", ")
        )
        .into());
    }
    let counted = usize::try_from(outcome.summary.total()).unwrap_or(usize::MAX);
    if counted != outcome.results.len() {
        return Err(format!(
            "the guest counted {counted} test(s) but {} result line(s) arrived",
            outcome.results.len()
        )
        .into());
    }
    Ok(())
}
