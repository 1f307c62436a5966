//! Where requests go and who signs them: credentials, region and endpoints, resolved the way
//! the AWS CLI and SDKs do (a subset of their chain, listed in each error).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// An environment to resolve from: the process's (`std::env::var`) in the CLI, a map in tests.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.is_empty()).cloned()
    }
}

#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    // Never print the secret or the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Raised when no source had credentials; a caller may branch on it (exit code, hint).
#[derive(Debug, thiserror::Error)]
#[error("no AWS credentials found; tried: {}. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials), or add aws_access_key_id/aws_secret_access_key to the profile in the credentials file (instance metadata, SSO, credential_process and role assumption are not supported)", tried.join("; "))]
pub struct NoCredentials {
    pub tried: Vec<String>,
}

fn home(env: &dyn Env) -> Option<PathBuf> {
    env.var("HOME").map(PathBuf::from)
}

fn credentials_file(env: &dyn Env) -> Option<PathBuf> {
    env.var("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| home(env).map(|h| h.join(".aws/credentials")))
}

fn config_file(env: &dyn Env) -> Option<PathBuf> {
    env.var("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| home(env).map(|h| h.join(".aws/config")))
}

fn profile_name(env: &dyn Env) -> String {
    env.var("AWS_PROFILE")
        .or_else(|| env.var("AWS_DEFAULT_PROFILE"))
        .unwrap_or_else(|| "default".to_string())
}

/// `[section]` -> key -> value, as the AWS CLI's INI dialect (comments `#`/`;`, keys lower case).
fn parse_ini(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            out.entry(name.clone()).or_default();
            section = Some(name);
        } else if let (Some(s), Some((k, v))) = (&section, line.split_once('=')) {
            out.entry(s.clone())
                .or_default()
                .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    out
}

/// Reads an INI file; `Ok(None)` when it does not exist.
fn read_ini(path: &Path) -> Result<Option<BTreeMap<String, BTreeMap<String, String>>>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(parse_ini(&text))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The `[profile NAME]` (or, for default, `[default]`) section of the config file.
fn config_section<'a>(
    ini: &'a BTreeMap<String, BTreeMap<String, String>>,
    profile: &str,
) -> Option<&'a BTreeMap<String, String>> {
    ini.get(&format!("profile {profile}")).or_else(|| {
        if profile == "default" {
            ini.get("default")
        } else {
            None
        }
    })
}

fn from_section(section: &BTreeMap<String, String>) -> Option<Credentials> {
    Some(Credentials {
        access_key_id: section.get("aws_access_key_id")?.clone(),
        secret_access_key: section.get("aws_secret_access_key")?.clone(),
        session_token: section.get("aws_session_token").cloned(),
    })
}

const UNSUPPORTED_KEYS: &[&str] = &[
    "role_arn",
    "credential_process",
    "sso_session",
    "sso_start_url",
    "web_identity_token_file",
];

/// The standard chain, first match wins: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`
/// (+`AWS_SESSION_TOKEN`); the profile (`AWS_PROFILE`, default `default`) in the shared
/// credentials file (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`); the same
/// profile in the config file (`AWS_CONFIG_FILE`, default `~/.aws/config`). Instance metadata
/// (IMDS) is deliberately not queried: berth publishes from build machines, and a silent
/// 169.254.169.254 probe is a surprise there. Errors with [`NoCredentials`] listing each source.
pub fn resolve_credentials() -> Result<Credentials> {
    resolve_credentials_from(&ProcessEnv)
}

pub fn resolve_credentials_from(env: &dyn Env) -> Result<Credentials> {
    let mut tried = Vec::new();
    match (
        env.var("AWS_ACCESS_KEY_ID"),
        env.var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(id), Some(secret)) => {
            return Ok(Credentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: env.var("AWS_SESSION_TOKEN"),
            })
        }
        (Some(_), None) => tried
            .push("environment (AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not)".into()),
        (None, Some(_)) => tried
            .push("environment (AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not)".into()),
        (None, None) => {
            tried.push("environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY unset)".into())
        }
    }
    let profile = profile_name(env);
    match credentials_file(env) {
        None => tried
            .push("shared credentials file (HOME and AWS_SHARED_CREDENTIALS_FILE unset)".into()),
        Some(path) => match read_ini(&path)? {
            None => tried.push(format!("{} (does not exist)", path.display())),
            Some(ini) => match ini.get(&profile) {
                None => tried.push(format!("{} (no [{profile}] profile)", path.display())),
                Some(section) => match from_section(section) {
                    Some(c) => return Ok(c),
                    None => tried.push(format!(
                        "{} ([{profile}] lacks aws_access_key_id/aws_secret_access_key)",
                        path.display()
                    )),
                },
            },
        },
    }
    match config_file(env) {
        None => tried.push("config file (HOME and AWS_CONFIG_FILE unset)".into()),
        Some(path) => match read_ini(&path)? {
            None => tried.push(format!("{} (does not exist)", path.display())),
            Some(ini) => match config_section(&ini, &profile) {
                None => tried.push(format!("{} (no profile {profile})", path.display())),
                Some(section) => {
                    if let Some(c) = from_section(section) {
                        return Ok(c);
                    }
                    let unsupported: Vec<&str> = UNSUPPORTED_KEYS
                        .iter()
                        .copied()
                        .filter(|k| section.contains_key(*k))
                        .collect();
                    tried.push(if unsupported.is_empty() {
                        format!("{} (profile {profile} has no keys)", path.display())
                    } else {
                        format!(
                            "{} (profile {profile} uses {}, which berth does not support: export temporary keys with `aws configure export-credentials --format env`)",
                            path.display(),
                            unsupported.join(", ")
                        )
                    });
                }
            },
        },
    }
    tried.push("instance metadata (not queried by berth)".into());
    Err(NoCredentials { tried }.into())
}

/// Region partitions' two-letter prefixes and the direction words AWS uses in region names.
const REGION_DIRECTIONS: &[&str] = &[
    "north",
    "south",
    "east",
    "west",
    "central",
    "northeast",
    "northwest",
    "southeast",
    "southwest",
];

/// Whether `r` looks like an AWS region name: `eu-west-1`, `us-gov-west-1`, `cn-north-1`,
/// `us-isob-east-1`. Region lists go stale; the shape does not.
pub fn is_region_shaped(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    let (geo, rest) = match parts.as_slice() {
        [geo, rest @ ..] => (*geo, rest),
        [] => return false,
    };
    let rest = match rest {
        [q, rest @ ..] if *q == "gov" || q.starts_with("iso") => rest,
        _ => rest,
    };
    geo.len() == 2
        && geo.bytes().all(|b| b.is_ascii_lowercase())
        && matches!(rest, [dir, n] if REGION_DIRECTIONS.contains(dir)
            && !n.is_empty() && n.len() <= 2 && n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0'))
}

pub fn check_region(r: &str, source: &str) -> Result<()> {
    if !is_region_shaped(r) {
        bail!(
            "{source}: {r:?} is not an AWS region name (expected something like us-east-1, eu-west-1, ap-southeast-2)"
        );
    }
    Ok(())
}

/// `KEY=VALUE` as an EC2/EBS tag, checked against AWS's rules: key 1-128 characters, value up to
/// 256, both of letters, digits, spaces and `_ . : / = + - @`, and no `aws:` prefix (reserved).
pub fn parse_tag(s: &str) -> std::result::Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE, like team=infra"))?;
    let allowed = |c: char| c.is_alphanumeric() || " _.:/=+-@".contains(c);
    if k.is_empty() || k.chars().count() > 128 {
        return Err(format!("{s:?}: a tag key has 1 to 128 characters"));
    }
    if v.chars().count() > 256 {
        return Err(format!("{s:?}: a tag value has at most 256 characters"));
    }
    if let Some(c) = k.chars().chain(v.chars()).find(|&c| !allowed(c)) {
        return Err(format!(
            "{s:?}: {c:?} is not allowed in a tag (letters, digits, spaces and _ . : / = + - @ are)"
        ));
    }
    if k.to_ascii_lowercase().starts_with("aws:") {
        return Err(format!(
            "{s:?}: tag keys starting with aws: are reserved by AWS"
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

/// The region: `flag` (`--region`), `AWS_REGION`, `AWS_DEFAULT_REGION`, then `region` in the
/// profile of the config file. The result is checked to look like a region.
pub fn resolve_region(flag: Option<&str>) -> Result<String> {
    resolve_region_from(flag, &ProcessEnv)
}

pub fn resolve_region_from(flag: Option<&str>, env: &dyn Env) -> Result<String> {
    let (region, source) = if let Some(f) = flag {
        (f.to_string(), "--region".to_string())
    } else if let Some(r) = env.var("AWS_REGION") {
        (r, "AWS_REGION".into())
    } else if let Some(r) = env.var("AWS_DEFAULT_REGION") {
        (r, "AWS_DEFAULT_REGION".into())
    } else {
        let profile = profile_name(env);
        let path = config_file(env);
        let found = match &path {
            Some(p) => read_ini(p)?.and_then(|ini| {
                config_section(&ini, &profile).and_then(|s| s.get("region").cloned())
            }),
            None => None,
        };
        match (found, path) {
            (Some(r), Some(p)) => (r, format!("{} (profile {profile})", p.display())),
            (_, p) => bail!(
                "no AWS region given; tried --region, AWS_REGION, AWS_DEFAULT_REGION and {}: pass --region (e.g. --region eu-west-1)",
                p.map(|p| format!("region in {} (profile {profile})", p.display()))
                    .unwrap_or_else(|| "the config file (HOME unset)".into())
            ),
        }
    };
    check_region(&region, &source)?;
    Ok(region)
}

/// A service endpoint: `scheme://authority[/base]`, default ports dropped so the signed `host`
/// equals the `Host` header sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: String,
    /// `host` or `host:port`
    pub authority: String,
    /// Path prefix without a trailing slash (usually empty).
    pub base_path: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint> {
        let (scheme, rest) = url.split_once("://").with_context(|| {
            format!("endpoint URL {url:?} has no scheme (expected https://host[:port])")
        })?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "https" && scheme != "http" {
            bail!("endpoint URL {url:?}: scheme must be http or https");
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') || path.contains(['?', '#']) {
            bail!("endpoint URL {url:?}: expected scheme://host[:port][/path]");
        }
        let authority = authority.to_ascii_lowercase();
        let default_port = if scheme == "https" { ":443" } else { ":80" };
        let authority = authority
            .strip_suffix(default_port)
            .unwrap_or(&authority)
            .to_string();
        Ok(Endpoint {
            scheme,
            authority,
            base_path: path.trim_end_matches('/').to_string(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "{}://{}{}{}",
            self.scheme, self.authority, self.base_path, path
        )
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

/// Where EC2 and EBS requests go. `Aws` derives each region's public endpoints; overrides
/// (`--endpoint-url`, `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_EC2`/`_EBS`) apply to every region,
/// which is what local emulators serving all regions on one port expect.
#[derive(Clone, Debug, Default)]
pub struct Endpoints {
    pub ec2: Option<Endpoint>,
    pub ebs: Option<Endpoint>,
}

impl Endpoints {
    /// `flag` (`--endpoint-url`) wins for both services; then `AWS_ENDPOINT_URL_EC2` /
    /// `AWS_ENDPOINT_URL_EBS`; then `AWS_ENDPOINT_URL`; else AWS's public endpoints.
    pub fn resolve(flag: Option<&str>) -> Result<Endpoints> {
        Self::resolve_from(flag, &ProcessEnv)
    }

    pub fn resolve_from(flag: Option<&str>, env: &dyn Env) -> Result<Endpoints> {
        if let Some(url) = flag {
            let ep = Endpoint::parse(url).context("--endpoint-url")?;
            return Ok(Endpoints {
                ec2: Some(ep.clone()),
                ebs: Some(ep),
            });
        }
        let one = |specific: &str| -> Result<Option<Endpoint>> {
            for name in [specific, "AWS_ENDPOINT_URL"] {
                if let Some(url) = env.var(name) {
                    return Endpoint::parse(&url).map(Some).context(name.to_string());
                }
            }
            Ok(None)
        };
        Ok(Endpoints {
            ec2: one("AWS_ENDPOINT_URL_EC2")?,
            ebs: one("AWS_ENDPOINT_URL_EBS")?,
        })
    }

    /// One URL for both services (what moto and LocalStack serve).
    pub fn single(url: &str) -> Result<Endpoints> {
        Self::resolve_from(Some(url), &BTreeMap::new())
    }

    pub fn ec2(&self, region: &str) -> Endpoint {
        self.ec2.clone().unwrap_or_else(|| public(region, "ec2"))
    }

    pub fn ebs(&self, region: &str) -> Endpoint {
        self.ebs.clone().unwrap_or_else(|| public(region, "ebs"))
    }
}

fn public(region: &str, service: &str) -> Endpoint {
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    Endpoint {
        scheme: "https".into(),
        authority: format!("{service}.{region}.{domain}"),
        base_path: String::new(),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn tags_follow_aws_rules() {
        assert_eq!(
            parse_tag("team=infra platform"),
            Ok(("team".into(), "infra platform".into()))
        );
        assert_eq!(parse_tag("empty="), Ok(("empty".into(), String::new())));
        assert_eq!(parse_tag("a=b=c"), Ok(("a".into(), "b=c".into())));
        for (bad, why) in [
            ("novalue", "KEY=VALUE"),
            ("=v", "1 to 128"),
            ("k=\u{7}", "not allowed"),
            ("aws:owner=me", "reserved"),
            ("AWS:x=y", "reserved"),
        ] {
            let e = parse_tag(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(parse_tag(&format!("{}=v", "k".repeat(129))).is_err());
        assert!(parse_tag(&format!("k={}", "v".repeat(257))).is_err());
        assert!(parse_tag(&format!("{}={}", "k".repeat(128), "v".repeat(256))).is_ok());
    }

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn region_shapes() {
        for ok in [
            "us-east-1",
            "eu-west-1",
            "ap-southeast-2",
            "us-gov-west-1",
            "cn-north-1",
            "il-central-1",
            "us-isob-east-1",
        ] {
            assert!(is_region_shaped(ok), "{ok}");
        }
        for bad in [
            "",
            "us-east",
            "useast1",
            "US-EAST-1",
            "us-east-01",
            "moon-base-1",
            "us-up-1",
            "eu-west-1a",
            "us east 1",
        ] {
            assert!(!is_region_shaped(bad), "{bad}");
        }
    }

    #[test]
    fn region_order() {
        let e = env(&[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_DEFAULT_REGION", "us-east-2"),
        ]);
        assert_eq!(
            resolve_region_from(Some("ap-south-1"), &e).unwrap(),
            "ap-south-1"
        );
        assert_eq!(resolve_region_from(None, &e).unwrap(), "eu-west-1");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config"),
            "[profile ci]\nregion = eu-north-1\n",
        )
        .unwrap();
        let cfg = dir.path().join("config");
        let e = env(&[
            ("AWS_CONFIG_FILE", cfg.to_str().unwrap()),
            ("AWS_PROFILE", "ci"),
        ]);
        assert_eq!(resolve_region_from(None, &e).unwrap(), "eu-north-1");
        let err = resolve_region_from(Some("mars-1"), &e).unwrap_err();
        assert!(
            format!("{err:#}").contains("--region: \"mars-1\" is not an AWS region"),
            "{err:#}"
        );
        let err = resolve_region_from(None, &env(&[("HOME", "/nonexistent")])).unwrap_err();
        assert!(format!("{err:#}").contains("AWS_DEFAULT_REGION"), "{err:#}");
    }

    #[test]
    fn credential_chain() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_str().unwrap();
        let e = env(&[
            ("HOME", home),
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "SK"),
            ("AWS_SESSION_TOKEN", "T"),
        ]);
        let c = resolve_credentials_from(&e).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.session_token.as_deref()),
            ("AK", Some("T"))
        );
        assert!(!format!("{c:?}").contains("SK"));

        std::fs::create_dir(dir.path().join(".aws")).unwrap();
        std::fs::write(
            dir.path().join(".aws/credentials"),
            "# comment\n[default]\naws_access_key_id = D\naws_secret_access_key = DS\n[ci]\naws_access_key_id=C\naws_secret_access_key=CS\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join(".aws/config"),
            "[profile cfg]\naws_access_key_id = F\naws_secret_access_key = FS\n[profile sso]\nsso_session = x\n",
        )
        .unwrap();
        let with = |p: &str| resolve_credentials_from(&env(&[("HOME", home), ("AWS_PROFILE", p)]));
        assert_eq!(
            resolve_credentials_from(&env(&[("HOME", home)]))
                .unwrap()
                .access_key_id,
            "D"
        );
        assert_eq!(with("ci").unwrap().access_key_id, "C");
        assert_eq!(with("cfg").unwrap().access_key_id, "F");
        let err = format!("{:#}", with("sso").unwrap_err());
        assert!(
            err.contains("sso_session, which berth does not support"),
            "{err}"
        );
        let err = with("nope").unwrap_err();
        assert!(err.downcast_ref::<NoCredentials>().is_some());
        let msg = format!("{err:#}");
        for want in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "credentials (no [nope] profile)",
            "config (no profile nope)",
            "instance metadata",
        ] {
            assert!(msg.contains(want), "{want} missing in: {msg}");
        }
    }

    #[test]
    fn endpoints() {
        let e = Endpoints::resolve_from(None, &env(&[])).unwrap();
        assert_eq!(
            e.ec2("eu-west-1").url("/"),
            "https://ec2.eu-west-1.amazonaws.com/"
        );
        assert_eq!(
            e.ebs("cn-north-1").authority,
            "ebs.cn-north-1.amazonaws.com.cn"
        );
        let e = Endpoints::resolve_from(
            None,
            &env(&[
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000/"),
                ("AWS_ENDPOINT_URL_EBS", "https://ebs.local:443"),
            ]),
        )
        .unwrap();
        assert_eq!(e.ec2("us-east-1").url("/x"), "http://127.0.0.1:5000/x");
        assert_eq!(e.ebs("us-east-1").authority, "ebs.local");
        let e = Endpoints::resolve_from(
            Some("http://127.0.0.1:1"),
            &env(&[("AWS_ENDPOINT_URL_EBS", "https://x")]),
        )
        .unwrap();
        assert_eq!(e.ebs("us-east-1").authority, "127.0.0.1:1");
        assert!(Endpoint::parse("127.0.0.1:5000").is_err());
        assert!(Endpoint::parse("ftp://x").is_err());
    }
}
