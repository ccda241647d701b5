//! The OpenDAL services this backplan is built with, and what each needs: the
//! options a `type: opendal` destination must set, the ones it may set, and the ones
//! that hold secrets. `docs/policy.md` lists the same; the policy checks use this
//! table, and the operator is built from the options as given (`src/repo/mod.rs`).

/// One OpenDAL service compiled into backplan.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    /// The OpenDAL scheme, e.g. `webdav`.
    pub scheme: &'static str,
    /// Options that must be set (directly or, for a secret, as `<name>_file`).
    pub required: &'static [&'static str],
    /// Options holding secrets: only a reference (`${env:NAME}`) or `<name>_file`.
    pub secrets: &'static [&'static str],
    /// Options naming a local file (a key, a credentials file): relative paths start
    /// at the policy's folder.
    pub paths: &'static [&'static str],
    /// Every option the service takes; `None` where backplan does not check them.
    pub options: Option<&'static [&'static str]>,
    /// What a missing required option is, for the help text.
    pub hint: &'static str,
    /// Options that take one of a few words, with those words.
    pub choices: &'static [(&'static str, &'static [&'static str])],
}

/// Every compiled-in service, by scheme. Cargo.toml's `opendal` features must match.
pub const SERVICES: &[Service] = &[
    Service {
        scheme: "azblob",
        required: &["container", "endpoint"],
        secrets: &["account_key", "sas_token", "encryption_key"],
        paths: &[],
        options: Some(&[
            "root",
            "container",
            "container_name",
            "azure_container_name",
            "endpoint",
            "azure_storage_endpoint",
            "azure_endpoint",
            "account_name",
            "azure_storage_account_name",
            "account_key",
            "encryption_key",
            "encryption_key_sha256",
            "encryption_algorithm",
            "sas_token",
            "skip_signature",
        ]),
        hint: "azblob needs `container` and `endpoint` (https://ACCOUNT.blob.core.windows.net; the account name is read from it), with `account_key` or `sas_token`",
        choices: &[],
    },
    Service {
        scheme: "b2",
        required: &[
            "bucket",
            "bucket_id",
            "application_key_id",
            "application_key",
        ],
        secrets: &["application_key"],
        paths: &[],
        options: Some(&[
            "root",
            "bucket",
            "bucket_id",
            "application_key_id",
            "application_key",
        ]),
        hint: "b2 needs `bucket`, `bucket_id` (shown in B2's bucket settings), `application_key_id` and `application_key`; or use `type: s3` with B2's S3 endpoint",
        choices: &[],
    },
    Service {
        scheme: "fs",
        required: &["root"],
        secrets: &[],
        paths: &["root"],
        options: None,
        hint: "fs needs `root`, the folder; `type: fs` says the same more simply",
        choices: &[],
    },
    Service {
        scheme: "gcs",
        required: &["bucket"],
        secrets: &["credential", "token"],
        paths: &["credential_path", "google_application_credentials"],
        options: Some(&[
            "root",
            "bucket",
            "endpoint",
            "scope",
            "service_account",
            "credential",
            "credential_path",
            "google_application_credentials",
            "predefined_acl",
            "default_storage_class",
            "skip_signature",
            "allow_anonymous",
            "disable_vm_metadata",
            "disable_config_load",
            "token",
        ]),
        hint: "gcs needs `bucket`; credentials come from `credential_path`, `credential`, or the machine's Google Cloud identity",
        choices: &[],
    },
    Service {
        scheme: "memory",
        required: &[],
        secrets: &[],
        paths: &[],
        options: None,
        hint: "",
        choices: &[],
    },
    Service {
        scheme: "s3",
        required: &["bucket"],
        secrets: &["secret_access_key", "session_token"],
        paths: &[],
        options: None,
        hint: "s3 needs `bucket`; `type: s3` says the same with its fields checked",
        choices: &[],
    },
    Service {
        scheme: "sftp",
        required: &["endpoint"],
        secrets: &[],
        paths: &["key"],
        options: Some(&["endpoint", "root", "user", "key", "known_hosts_strategy"]),
        hint: "sftp needs `endpoint`: `host`, `user@host` or `ssh://user@host:port`",
        choices: &[("known_hosts_strategy", &["strict", "add", "accept"])],
    },
    Service {
        scheme: "webdav",
        required: &["endpoint"],
        secrets: &["password", "token"],
        paths: &[],
        options: Some(&[
            "endpoint",
            "root",
            "username",
            "password",
            "token",
            "disable_create_dir",
            "user_metadata_prefix",
            "user_metadata_uri",
        ]),
        hint: "webdav needs `endpoint`, the server's URL, e.g. https://dav.example.org/remote.php/dav/files/backup",
        choices: &[],
    },
];

/// The service with this scheme, if it is compiled in.
pub fn service(scheme: &str) -> Option<&'static Service> {
    SERVICES.iter().find(|s| s.scheme == scheme)
}

/// The schemes compiled in, sorted.
pub fn schemes() -> impl Iterator<Item = &'static str> {
    SERVICES.iter().map(|s| s.scheme)
}

/// Azure's own endpoint suffixes: an azblob endpoint under one of them names the
/// account (`https://ACCOUNT.blob.core.windows.net`); any other (Azurite, a private
/// endpoint) needs `account_name` beside an `account_key`.
const AZURE_SUFFIXES: &[&str] = &[
    ".core.windows.net",
    ".core.usgovcloudapi.net",
    ".core.chinacloudapi.cn",
];

impl Service {
    /// Options required only given others, as `(option, why)`.
    pub fn required_given(
        &self,
        options: &std::collections::BTreeMap<String, super::Secret>,
    ) -> Vec<(&'static str, &'static str)> {
        let set = |k: &str| options.contains_key(k) || options.contains_key(&format!("{k}_file"));
        let mut out = Vec::new();
        if self.scheme == "azblob"
            && set("account_key")
            && !set("account_name")
            && options.get("endpoint").is_some_and(|e| {
                let host = e.template().split("://").last().unwrap_or_default();
                let host = host.split('/').next().unwrap_or_default();
                !AZURE_SUFFIXES.iter().any(|s| host.ends_with(s))
            })
        {
            out.push((
                "account_name",
                "with an `account_key` and an endpoint outside Azure's own domains (Azurite, a private endpoint), the account is not in the endpoint's name: set `account_name`",
            ));
        }
        out
    }

    /// The secret option `key` names as its file form (`password_file` → `password`).
    pub fn secret_of_file_option(&self, key: &str) -> Option<&'static str> {
        let base = key.strip_suffix("_file")?;
        self.secrets.iter().copied().find(|s| *s == base)
    }

    /// Whether the service takes `key` (always, where its options are not checked).
    pub fn takes(&self, key: &str) -> bool {
        self.options.is_none_or(|o| o.contains(&key)) || self.secret_of_file_option(key).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_in_the_table_is_one_opendal_is_built_with() {
        opendal::init_default_registry();
        let registered = opendal::OperatorRegistry::get().schemes();
        for s in SERVICES {
            assert!(
                registered.contains(s.scheme),
                "{} is in the table but not compiled in",
                s.scheme
            );
        }
        let schemes: Vec<_> = schemes().collect();
        let mut sorted = schemes.clone();
        sorted.sort_unstable();
        assert_eq!(schemes, sorted);
    }

    #[test]
    fn secrets_are_options_the_service_takes() {
        for s in SERVICES {
            for secret in s.secrets {
                assert!(s.takes(secret), "{}: {secret}", s.scheme);
                assert_eq!(
                    s.secret_of_file_option(&format!("{secret}_file")),
                    Some(*secret)
                );
            }
            for r in s.required {
                assert!(s.takes(r), "{}: {r}", s.scheme);
            }
        }
        assert!(!service("webdav").expect("webdav").takes("passwrod"));
    }
}
