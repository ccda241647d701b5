//! `backplan keygen`: a recipient key pair made where the secret key will be kept
//! (an operator's machine, not the backup host), so that backups are encrypted with
//! AEAD from the start.

use super::{Exit, print, write_new};
use crate::cli::KeygenArgs;
use crate::crypto::generate_key;
use crate::error::{Code, Failure};

pub fn run(args: &KeygenArgs) -> miette::Result<Exit> {
    for path in [&args.public, &args.secret] {
        if path.exists() {
            return Err(Failure::new(
                Code::Io,
                format!("{} exists; keygen never overwrites a key", path.display()),
            )
            .with_help("choose other files, or move the old key away first")
            .into());
        }
    }
    let key = generate_key(&args.user_id).map_err(|e| Failure::new(Code::Io, e.0))?;
    write_new(&args.secret, &key.secret, 0o600)?;
    write_new(&args.public, &key.public, 0o644)?;
    print(&format!(
        "Made key {fp} for {uid}.\n  public key: {public} (name it in the policy's `recipients`)\n  secret key: {secret} (mode 0600; restores and `verify --read-data` need it: keep it off the backup host, with a copy offline)\n",
        fp = key.fingerprint,
        uid = args.user_id,
        public = args.public.display(),
        secret = args.secret.display(),
    ))?;
    Ok(Exit::Ok)
}
