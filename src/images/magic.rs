//! Whether received bytes are what their kind says, read from their first bytes, as `file(1)`
//! would: an ISO holds an ISO 9660 or UDF volume descriptor where the standard puts it, a kernel
//! is a Linux bzImage (its boot-protocol header) or an ELF file (PVH, multiboot). Disks are
//! `qemu-img`'s business (`install`). A file of the wrong kind is refused at upload or import
//! instead of becoming a `ready` image that fails when a VM boots it.

use std::path::Path;

use anyhow::Context;
use tokio::io::AsyncReadExt;

use super::{ImageError, ImageKind};

/// Where an ISO's first volume descriptor begins: sector 16, 2048-byte sectors.
const VOLUME_DESCRIPTORS: usize = 16 * 2048;
/// The identifiers a first volume descriptor may carry after its type byte: ISO 9660's, and
/// the extended area that begins a UDF volume.
const VOLUME_IDS: [&[u8; 5]; 2] = [b"CD001", b"BEA01"];
/// The Linux boot protocol's header signature, at 0x202 in a bzImage.
const BZIMAGE_MAGIC: (usize, &[u8; 4]) = (0x202, b"HdrS");
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
/// How many first bytes the checks read.
const HEADER_LEN: usize = VOLUME_DESCRIPTORS + 6;

/// `Ok` when `header` (a file's first bytes, fewer if the file is shorter) fits `kind`; the
/// refusal says what was expected.
pub fn check(kind: ImageKind, header: &[u8]) -> Result<(), String> {
    match kind {
        ImageKind::Disk => Ok(()),
        ImageKind::Iso => {
            let id = header.get(VOLUME_DESCRIPTORS + 1..VOLUME_DESCRIPTORS + 6);
            if id.is_some_and(|id| VOLUME_IDS.iter().any(|v| id == v.as_slice())) {
                Ok(())
            } else {
                Err(
                    "it is not an ISO image: no ISO 9660 or UDF volume descriptor at byte 32768."
                        .to_string(),
                )
            }
        }
        ImageKind::Kernel => {
            let (at, magic) = BZIMAGE_MAGIC;
            let bz = header.get(at..at + magic.len()) == Some(magic.as_slice());
            if bz || header.starts_with(ELF_MAGIC) {
                Ok(())
            } else {
                Err("it is not a kernel QEMU can boot: neither a Linux bzImage (\"HdrS\" at 0x202) nor an ELF file.".to_string())
            }
        }
    }
}

/// [`check`] on the file at `path`.
pub async fn check_file(kind: ImageKind, path: &Path) -> Result<(), ImageError> {
    if kind == ImageKind::Disk {
        return Ok(());
    }
    let file = tokio::fs::File::open(path)
        .await
        .context("could not open the received image")?;
    let mut header = Vec::with_capacity(HEADER_LEN);
    file.take(HEADER_LEN as u64)
        .read_to_end(&mut header)
        .await
        .context("could not read the received image")?;
    check(kind, &header).map_err(ImageError::Unusable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(at: usize, bytes: &[u8], len: usize) -> Vec<u8> {
        let mut header = vec![0u8; len];
        header[at..at + bytes.len()].copy_from_slice(bytes);
        header
    }

    #[test]
    fn an_iso_needs_a_volume_descriptor_at_sector_16() {
        assert!(check(ImageKind::Iso, &with(32769, b"CD001", HEADER_LEN)).is_ok());
        assert!(check(ImageKind::Iso, &with(32769, b"BEA01", HEADER_LEN)).is_ok());
        assert!(check(ImageKind::Iso, &with(32768, b"CD001", HEADER_LEN)).is_err());
        assert!(check(ImageKind::Iso, &[]).is_err());
        assert!(check(ImageKind::Iso, &with(0, b"CD001", 4096)).is_err());
        // A file that ends in the middle of the identifier.
        assert!(check(ImageKind::Iso, &with(32769, b"CD0", 32772)).is_err());
    }

    #[test]
    fn a_kernel_is_a_bzimage_or_an_elf_file() {
        assert!(check(ImageKind::Kernel, &with(0x202, b"HdrS", 1024)).is_ok());
        assert!(check(ImageKind::Kernel, &with(0, b"\x7fELF", 64)).is_ok());
        assert!(check(ImageKind::Kernel, b"#!/bin/sh\necho not a kernel\n").is_err());
        assert!(check(ImageKind::Kernel, &[]).is_err());
        assert!(check(ImageKind::Kernel, &with(0x200, b"HdrS", 1024)).is_err());
    }

    #[test]
    fn disks_are_left_to_qemu_img() {
        assert!(check(ImageKind::Disk, &[]).is_ok());
    }
}
