//! VNC authentication (RFC 6143 section 7.2.2) and the obfuscated password
//! file that TigerVNC's `Xvnc -PasswordFile` reads.
//!
//! Both are single-DES in ECB mode. VNC uses the password's first 8 bytes
//! (zero-padded) as the key with the bits of every key byte reversed: the
//! original implementation fed the key to a DES routine that numbers bits from
//! the other end. The password file is the password block encrypted under a
//! fixed, public key, which only hides it from casual eyes.

use des::Des;
use des::cipher::generic_array::GenericArray;
use des::cipher::{BlockEncrypt, KeyInit};

/// Length of the server's challenge and of the client's response.
pub const CHALLENGE_LEN: usize = 16;

/// The fixed key of VNC password files (`vncpasswd`), before bit reversal.
const PASSWORD_FILE_KEY: [u8; 8] = [23, 82, 107, 6, 35, 78, 88, 7];

/// The first 8 bytes of the password, zero-padded (VNC ignores the rest).
fn password_block(password: &str) -> [u8; 8] {
    let mut block = [0u8; 8];
    for (dst, src) in block.iter_mut().zip(password.as_bytes()) {
        *dst = *src;
    }
    block
}

/// A DES cipher keyed the VNC way: every key byte bit-reversed.
fn vnc_des(key: [u8; 8]) -> Des {
    let reversed = key.map(u8::reverse_bits);
    Des::new(GenericArray::from_slice(&reversed))
}

fn encrypt_blocks(cipher: &Des, data: &mut [u8]) {
    for chunk in data.chunks_exact_mut(8) {
        cipher.encrypt_block(GenericArray::from_mut_slice(chunk));
    }
}

/// The 16-byte response to a VNC authentication challenge.
pub fn challenge_response(password: &str, challenge: &[u8; CHALLENGE_LEN]) -> [u8; CHALLENGE_LEN] {
    let cipher = vnc_des(password_block(password));
    let mut response = *challenge;
    encrypt_blocks(&cipher, &mut response);
    response
}

/// The 8-byte obfuscated password file that `Xvnc -PasswordFile` reads,
/// byte-for-byte what `vncpasswd -f` writes for the same password (only the
/// first 8 bytes of the password count).
pub fn vnc_password_file(password: &str) -> [u8; 8] {
    let cipher = vnc_des(PASSWORD_FILE_KEY);
    let mut block = password_block(password);
    encrypt_blocks(&cipher, &mut block);
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vector computed independently with OpenSSL:
    /// `openssl enc -des-ecb -nopad -provider legacy -provider default
    ///  -K 0e86ceceeef64e26` (the bit-reversed bytes of "password") over the
    /// 16 ASCII bytes "0123456789abcdef".
    #[test]
    fn challenge_response_matches_openssl_des() {
        let response = challenge_response("password", b"0123456789abcdef");
        let expected: [u8; 16] =
            [0x56, 0x45, 0xab, 0xeb, 0x5f, 0x1e, 0x64, 0x75, 0xe8, 0xfe, 0xb1, 0x1b, 0xeb, 0x66, 0xea, 0x19];
        assert_eq!(response, expected);
        // Only the first 8 bytes of the password are used.
        assert_eq!(challenge_response("password-and-more", b"0123456789abcdef"), expected);
        assert_ne!(challenge_response("passwore", b"0123456789abcdef"), expected);
    }

    /// The password file must be exactly what TigerVNC's own tool writes.
    #[test]
    fn password_file_matches_vncpasswd() {
        for password in ["password", "abc", "s3cr3t!", "longpassword123", "ümlaut"] {
            let mut child = std::process::Command::new("vncpasswd")
                .arg("-f")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("vncpasswd (tigervnc-tools) must be installed");
            {
                use std::io::Write;
                let mut stdin = child.stdin.take().unwrap();
                writeln!(stdin, "{password}").unwrap();
            }
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success());
            assert_eq!(out.stdout, vnc_password_file(password), "password {password:?}");
        }
    }
}
