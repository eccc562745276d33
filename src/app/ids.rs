//! New ids for the things a command makes: a VM, a job.

use crate::auth::ID_ALPHABET;

pub fn new_vm_id() -> String {
    format!("vm-{}", nanoid::nanoid!(12, &ID_ALPHABET))
}

pub fn new_job_id() -> String {
    format!("job-{}", nanoid::nanoid!(16, &ID_ALPHABET))
}

pub fn new_webhook_id() -> String {
    format!("wh-{}", nanoid::nanoid!(12, &ID_ALPHABET))
}
