//! Debian distribution kernels for the VM matrix: choosing the newest package
//! of a series, downloading and unpacking it into the cache, and collecting
//! the kernel modules the tests need.

use std::{
    cmp::Ordering,
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    command::{capture, capture_bytes, run},
    setup,
};

/// Modules the suite uses, loaded by `/init` (with their dependencies).
/// `loop` backs the ext4 file system the path-identity test makes (ext4 itself
/// is built into Debian's kernels).
const WANTED_MODULES: &[&str] = &[
    "veth",
    "sch_ingress",
    "cls_bpf",
    "sch_fq",
    "sch_netem",
    "loop",
];

/// Without these the network tests cannot even build their topology, so a
/// flavour lacking one is passed over for the next.
const ESSENTIAL_MODULES: &[&str] = &["veth", "sch_ingress", "cls_bpf"];

/// Image flavours in order of preference: `cloud` is the smallest and boots
/// fastest; the generic ones carry every driver.
const FLAVOURS: &[&str] = &["cloud-amd64", "amd64-unsigned", "amd64"];

/// apt's package lists older than this are refreshed before choosing a kernel,
/// so the chosen version is still on the mirror.
const APT_LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

const APT_LISTS: &str = "/var/lib/apt/lists";

/// A kernel series of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Series {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
}

impl Series {
    pub const ALL: &[Self] = &[Self::V6_1, Self::V6_12];

    pub fn name(self) -> &'static str {
        match self {
            Self::V6_1 => "6.1",
            Self::V6_12 => "6.12",
        }
    }

    /// What the suite must find on this series (`FAULTLINE_EXPECT`, in the
    /// agent's capability vocabulary): a test that would skip for lack of one
    /// of them fails instead. 6.1 has no TCX (interface scope runs on
    /// cgroup_skb) and its sock_ops programs lack the cgroup helper, so the
    /// connect hooks pace there.
    pub fn expected_mechanisms(self) -> &'static str {
        match self {
            Self::V6_1 => {
                "cgroup_sock_addr,raw_tracepoint,cgroup_skb,bpf_lsm,bandwidth/cgroup_sock_addr"
            }
            Self::V6_12 => "cgroup_sock_addr,raw_tracepoint,cgroup_skb,bpf_lsm,tcx,tcx+fq,sock_ops",
        }
    }

    /// apt-cache regular expression for this series' image packages of `flavour`.
    fn package_pattern(self, flavour: &str) -> String {
        let release = match self {
            // 6.1 images are named after the ABI: linux-image-6.1.0-56-cloud-amd64.
            Self::V6_1 => r"6\.1\.0-[0-9]+",
            // 6.12 (from bookworm's backports of trixie): linux-image-6.12.117+deb12-cloud-amd64.
            Self::V6_12 => r"6\.12\.[0-9]+\+deb12",
        };
        format!("^linux-image-{release}-{flavour}$")
    }
}

/// An unpacked kernel package, ready to boot.
pub struct Kernel {
    /// `uname -r` of the kernel, e.g. `6.12.117+deb12-cloud-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// Uncompressed module files in load order (dependencies first).
    pub modules: Vec<PathBuf>,
    /// Wanted modules this kernel has neither built in nor as a file.
    pub missing_modules: Vec<&'static str>,
}

/// Chooses, downloads (once) and unpacks the newest kernel of `series`,
/// preferring the first flavour that has every essential module.
pub fn prepare(series: Series, cache: &Path) -> Result<Kernel> {
    refresh_apt_lists_if_stale()?;
    for flavour in FLAVOURS {
        let Some((package, version)) = newest_package(series, flavour)? else {
            eprintln!(
                "vm: no {flavour} image of Linux {} offered by apt",
                series.name()
            );
            continue;
        };
        eprintln!("vm: Linux {}: {package} {version}", series.name());
        let kernel = unpack(&package, &version, cache)?;
        let essential_missing: Vec<_> = kernel
            .missing_modules
            .iter()
            .filter(|m| ESSENTIAL_MODULES.contains(m))
            .collect();
        if essential_missing.is_empty() {
            if !kernel.missing_modules.is_empty() {
                eprintln!(
                    "vm: warning: {} has no module {}",
                    kernel.release,
                    kernel.missing_modules.join(", ")
                );
            }
            return Ok(kernel);
        }
        eprintln!("vm: {package} lacks {essential_missing:?}; trying the next flavour");
    }
    bail!(
        "no Debian image of Linux {} with the modules {} is offered by apt \
         (flavours tried: {})",
        series.name(),
        ESSENTIAL_MODULES.join(", "),
        FLAVOURS.join(", ")
    )
}

fn refresh_apt_lists_if_stale() -> Result<()> {
    let newest = fs::read_dir(APT_LISTS)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().contains("_Packages"))
        .filter_map(|entry| entry.metadata().and_then(|m| m.modified()).ok())
        .max();
    let fresh = newest.is_some_and(|modified| {
        SystemTime::now()
            .duration_since(modified)
            .is_ok_and(|age| age < APT_LISTS_MAX_AGE)
    });
    if fresh {
        return Ok(());
    }
    eprintln!("vm: apt's package lists are missing or older than a day; refreshing them");
    setup::apt_get_update()
}

/// The newest `(package, version)` of the series and flavour that apt offers.
fn newest_package(series: Series, flavour: &str) -> Result<Option<(String, String)>> {
    let pattern = series.package_pattern(flavour);
    let names = capture(Command::new("apt-cache").args(["search", "--names-only", &pattern]))?;
    let names: Vec<&str> = names
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    if names.is_empty() {
        return Ok(None);
    }
    let policy = capture(Command::new("apt-cache").arg("policy").args(&names))?;
    Ok(candidates(&policy)
        .into_iter()
        .max_by(|(_, a), (_, b)| compare_debian_versions(a, b)))
}

/// `(package, candidate version)` pairs from `apt-cache policy` output.
fn candidates(policy: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut package = None;
    for line in policy.lines() {
        if !line.starts_with(' ') {
            package = line.strip_suffix(':').map(str::to_owned);
        } else if let Some(version) = line.trim().strip_prefix("Candidate: ")
            && version != "(none)"
            && let Some(package) = package.take()
        {
            found.push((package, version.to_owned()));
        }
    }
    found
}

/// Orders two Debian version strings as `dpkg --compare-versions` does.
pub fn compare_debian_versions(a: &str, b: &str) -> Ordering {
    fn split(version: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match version.split_once(':') {
            Some((epoch, rest)) => (epoch.parse().unwrap_or(0), rest),
            None => (0, version),
        };
        let (upstream, revision) = rest.rsplit_once('-').unwrap_or((rest, ""));
        (epoch, upstream, revision)
    }
    let (a_epoch, a_upstream, a_revision) = split(a);
    let (b_epoch, b_upstream, b_revision) = split(b);
    a_epoch
        .cmp(&b_epoch)
        .then_with(|| compare_version_part(a_upstream, b_upstream))
        .then_with(|| compare_version_part(a_revision, b_revision))
}

/// dpkg's `verrevcmp`: alternating non-digit runs (letters before other
/// characters, `~` before everything, even the end) and numeric runs.
fn compare_version_part(a: &str, b: &str) -> Ordering {
    fn weight(c: Option<u8>) -> i32 {
        match c {
            None => 0,
            Some(b'~') => -1,
            Some(c) if c.is_ascii_digit() => 0,
            Some(c) if c.is_ascii_alphabetic() => i32::from(c),
            Some(c) => i32::from(c) + 256,
        }
    }
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while !a.is_empty() || !b.is_empty() {
        while a.first().is_some_and(|c| !c.is_ascii_digit())
            || b.first().is_some_and(|c| !c.is_ascii_digit())
        {
            let order = weight(a.first().copied()).cmp(&weight(b.first().copied()));
            if order.is_ne() {
                return order;
            }
            a = a.get(1..).unwrap_or_default();
            b = b.get(1..).unwrap_or_default();
        }
        let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
        let (a_digits, b_digits) = (digits(a), digits(b));
        let a_number = trim_leading_zeros(&a[..a_digits]);
        let b_number = trim_leading_zeros(&b[..b_digits]);
        let order = a_number
            .len()
            .cmp(&b_number.len())
            .then_with(|| a_number.cmp(b_number));
        if order.is_ne() {
            return order;
        }
        a = &a[a_digits..];
        b = &b[b_digits..];
    }
    Ordering::Equal
}

fn trim_leading_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[zeros..]
}

/// Downloads the package into `cache/debs` and unpacks it into
/// `cache/kernels/PACKAGE_VERSION`, both only once.
fn unpack(package: &str, version: &str, cache: &Path) -> Result<Kernel> {
    let debs = cache.join("debs");
    let deb = debs.join(format!(
        "{package}_{}_amd64.deb",
        version.replace(':', "%3a")
    ));
    if !deb.exists() {
        fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
        // apt's download sandbox user could not write into a root-owned cache.
        run(Command::new("apt-get")
            .current_dir(&debs)
            .args(["-o", "APT::Sandbox::User=root", "download"])
            .arg(format!("{package}={version}")))?;
        if !deb.exists() {
            bail!("apt-get download did not leave {} behind", deb.display());
        }
    }
    let root = cache.join("kernels").join(format!("{package}_{version}"));
    if !root.join("boot").is_dir() {
        let partial = root.with_extension("partial");
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir_all(&partial)?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
        fs::rename(&partial, &root)
            .with_context(|| format!("moving the unpacked kernel to {}", root.display()))?;
    }

    let release = single_dir_name(&root.join("lib/modules"))?;
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!("{} has no kernel image at {}", package, vmlinuz.display());
    }
    let modules_dir = root.join("lib/modules").join(&release);
    let unpacked = cache.join("modules").join(&release);
    let (modules, missing_modules) = collect_modules(&modules_dir, &unpacked)?;
    Ok(Kernel {
        release,
        vmlinuz,
        modules,
        missing_modules,
    })
}

fn single_dir_name(dir: &Path) -> Result<String> {
    let mut names = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<Vec<_>>>()?;
    match names.len() {
        1 => Ok(names.remove(0)),
        n => bail!(
            "expected one kernel release in {}, found {n}",
            dir.display()
        ),
    }
}

/// Resolves [`WANTED_MODULES`] and their dependencies to uncompressed `.ko`
/// files under `unpacked`, in load order. Debian's packages ship no
/// `modules.dep` (depmod runs at install time), so the dependencies come from
/// each module's own `depends=` field.
fn collect_modules(
    modules_dir: &Path,
    unpacked: &Path,
) -> Result<(Vec<PathBuf>, Vec<&'static str>)> {
    let builtin: BTreeSet<String> = fs::read_to_string(modules_dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(module_name)
        .collect();
    let mut files = BTreeMap::new();
    index_module_files(&modules_dir.join("kernel"), &mut files)?;

    let mut loader = ModuleLoader {
        builtin: &builtin,
        files: &files,
        unpacked,
        order: Vec::new(),
        seen: BTreeSet::new(),
    };
    let mut missing = Vec::new();
    for &module in WANTED_MODULES {
        if !loader.add(module)? {
            missing.push(module);
        }
    }
    Ok((loader.order, missing))
}

/// `sch_netem` from `kernel/net/sched/sch_netem.ko.xz`: the name the kernel
/// knows a module file by (dashes read as underscores).
fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file.split_once(".ko").map(|(stem, _)| stem)?;
    Some(stem.replace('-', "_"))
}

fn index_module_files(dir: &Path, files: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            index_module_files(&path, files)?;
        } else if let Some(name) = module_name(&path.to_string_lossy()) {
            files.insert(name, path);
        }
    }
    Ok(())
}

struct ModuleLoader<'a> {
    builtin: &'a BTreeSet<String>,
    files: &'a BTreeMap<String, PathBuf>,
    unpacked: &'a Path,
    order: Vec<PathBuf>,
    seen: BTreeSet<String>,
}

impl ModuleLoader<'_> {
    /// Appends `module` after its dependencies; false if the kernel lacks it.
    fn add(&mut self, module: &str) -> Result<bool> {
        if self.builtin.contains(module) || self.seen.contains(module) {
            return Ok(true);
        }
        let Some(source) = self.files.get(module) else {
            return Ok(false);
        };
        self.seen.insert(module.to_owned());
        let ko = self.unpacked.join(format!("{module}.ko"));
        if !ko.exists() {
            decompress_module(source, &ko)?;
        }
        let image = fs::read(&ko).with_context(|| format!("reading {}", ko.display()))?;
        for dependency in module_dependencies(&image) {
            if !self.add(&dependency)? {
                bail!("module {module} needs {dependency}, which the kernel package lacks");
            }
        }
        self.order.push(ko);
        Ok(true)
    }
}

/// Writes `source` (`.ko`, `.ko.xz`, `.ko.zst` or `.ko.gz`) uncompressed to
/// `ko`: busybox's insmod hands the file to the kernel as it is.
fn decompress_module(source: &Path, ko: &Path) -> Result<()> {
    let name = source.to_string_lossy();
    let image = if name.ends_with(".ko") {
        fs::read(source).with_context(|| format!("reading {name}"))?
    } else {
        let tool = match name.rsplit('.').next() {
            Some("xz") => "xz",
            Some("zst") => "zstd",
            Some("gz") => "gzip",
            _ => bail!("unknown module compression: {name}"),
        };
        capture_bytes(Command::new(tool).arg("-dc").arg(source))?
    };
    let dir = ko.parent().expect("module path has a directory");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let partial = ko.with_extension("partial");
    fs::write(&partial, image).with_context(|| format!("writing {}", partial.display()))?;
    fs::rename(&partial, ko).with_context(|| format!("writing {}", ko.display()))
}

/// The names in the `depends=` entry of a module's `.modinfo` section.
fn module_dependencies(image: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(start) = image.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let value = &image[start + KEY.len()..];
    let end = value.iter().position(|&c| c == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .filter(|name| !name.is_empty())
        .map(|name| name.replace('-', "_"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_versions_compare_like_dpkg() {
        let ascending = [
            "6.1.158-1",
            "6.1.192-1",
            "6.1.192-2",
            "6.12.9-1~deb12u1",
            "6.12.9-1",
            "6.12.38-1~deb12u1",
            "6.12.117-1~deb12u1",
            "1:0.1-1",
        ];
        for pair in ascending.windows(2) {
            assert_eq!(
                compare_debian_versions(pair[0], pair[1]),
                Ordering::Less,
                "{} < {}",
                pair[0],
                pair[1]
            );
            assert_eq!(compare_debian_versions(pair[1], pair[0]), Ordering::Greater);
        }
        assert_eq!(compare_debian_versions("1.0-1", "1.00-1"), Ordering::Equal);
        assert_eq!(compare_debian_versions("1.0a", "1.0+"), Ordering::Less);
    }

    #[test]
    fn candidates_come_from_apt_cache_policy() {
        let policy = "\
linux-image-6.1.0-56-cloud-amd64:
  Installed: (none)
  Candidate: 6.1.192-2
  Version table:
     6.1.192-2 500
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
linux-image-6.1.0-9-cloud-amd64:
  Installed: (none)
  Candidate: (none)
";
        assert_eq!(
            candidates(policy),
            [(
                "linux-image-6.1.0-56-cloud-amd64".to_owned(),
                "6.1.192-2".to_owned()
            )]
        );
    }

    #[test]
    fn module_names_and_dependencies() {
        assert_eq!(
            module_name("kernel/net/sched/sch_netem.ko.xz").as_deref(),
            Some("sch_netem")
        );
        assert_eq!(
            module_name("kernel/drivers/net/nf-conntrack.ko").as_deref(),
            Some("nf_conntrack")
        );
        assert_eq!(module_name("modules.order"), None);
        let modinfo = b"\x7fELF..\0license=GPL\0depends=nf_conntrack,libcrc32c\0intree=Y\0";
        assert_eq!(module_dependencies(modinfo), ["nf_conntrack", "libcrc32c"]);
        assert!(module_dependencies(b"\0depends=\0").is_empty());
    }
}
