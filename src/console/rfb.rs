//! The little of RFB (the VNC protocol, RFC 6143) the server itself needs: `vnc-input` frames
//! become PointerEvent and KeyEvent messages, and a tracker follows what a `/ws` client sends
//! (its handshake, then whole messages) so such a message is only ever slipped in where the
//! server expects a new client message: after the client's ClientInit, between its messages.
//! Everything else of the protocol is the client's and QEMU's.

/// RFB PointerEvent: `buttons` is the button mask (bit 0 left, 1 middle, 2 right, 3/4 wheel).
pub fn pointer_event(x: u16, y: u16, buttons: u8) -> [u8; 6] {
    let [x1, x2] = x.to_be_bytes();
    let [y1, y2] = y.to_be_bytes();
    [5, buttons, x1, x2, y1, y2]
}

/// RFB KeyEvent for an X11 keysym.
pub fn key_event(down: bool, keysym: u32) -> [u8; 8] {
    let [k1, k2, k3, k4] = keysym.to_be_bytes();
    [4, u8::from(down), 0, 0, k1, k2, k3, k4]
}

/// The X11 keysym of a key, named as a browser's `KeyboardEvent.key` names it (`a`, `A`, `Enter`,
/// `ArrowUp`, `F5`, ...). A single character is its Latin-1 keysym, or the Unicode keysym
/// (`0x01000000` + code point) beyond Latin-1.
pub fn keysym(key: &str) -> Option<u32> {
    let mut chars = key.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        let code = u32::from(c);
        return match code {
            0x20..=0x7e | 0xa0..=0xff => Some(code),
            0x00..=0x1f | 0x7f..=0x9f => None,
            _ => Some(0x0100_0000 + code),
        };
    }
    let named = match key {
        "Backspace" => 0xff08,
        "Tab" => 0xff09,
        "Enter" => 0xff0d,
        "Escape" => 0xff1b,
        "Delete" => 0xffff,
        "Home" => 0xff50,
        "ArrowLeft" => 0xff51,
        "ArrowUp" => 0xff52,
        "ArrowRight" => 0xff53,
        "ArrowDown" => 0xff54,
        "PageUp" => 0xff55,
        "PageDown" => 0xff56,
        "End" => 0xff57,
        "Insert" => 0xff63,
        "Shift" => 0xffe1,
        "Control" => 0xffe3,
        "CapsLock" => 0xffe5,
        "Meta" => 0xffe7,
        "Alt" => 0xffe9,
        "Super" => 0xffeb,
        "AltGraph" => 0xfe03,
        _ => {
            let n: u32 = key.strip_prefix('F')?.parse().ok()?;
            return (1..=12).contains(&n).then(|| 0xffbd + n);
        }
    };
    Some(named)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The 12-byte ProtocolVersion.
    Version,
    /// The security type the client picks (3.7 and later).
    Security,
    /// The one-byte ClientInit.
    ClientInit,
    /// Whole client messages.
    Messages,
    /// A message this tracker does not know: the stream can no longer be followed.
    Lost,
}

/// Follows a client's side of an RFB stream.
#[derive(Debug, Clone)]
pub struct ClientStream {
    phase: Phase,
    pending: Vec<u8>,
}

impl Default for ClientStream {
    fn default() -> Self {
        ClientStream {
            phase: Phase::Version,
            pending: Vec::new(),
        }
    }
}

impl ClientStream {
    /// Takes what the client sent.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.phase == Phase::Lost {
            return;
        }
        self.pending.extend_from_slice(bytes);
        while let Some(used) = self.step() {
            self.pending.drain(..used);
        }
    }

    /// Whether a message of the server's own may go in now: the handshake is done and the
    /// client is between messages.
    pub fn between_messages(&self) -> bool {
        self.phase == Phase::Messages && self.pending.is_empty()
    }

    /// Consumes one complete unit from `pending`, if there is one; returns its length.
    fn step(&mut self) -> Option<usize> {
        let p = &self.pending;
        match self.phase {
            Phase::Lost => None,
            Phase::Version => {
                let version = p.get(..12)?;
                let minor = std::str::from_utf8(&version[8..11])
                    .ok()
                    .and_then(|m| m.parse::<u32>().ok());
                self.phase = match (version.starts_with(b"RFB 003."), minor) {
                    (true, Some(m)) if m >= 7 => Phase::Security,
                    (true, Some(_)) => Phase::ClientInit,
                    _ => Phase::Lost,
                };
                Some(12)
            }
            Phase::Security => {
                // Only "None" needs no more from the client; QEMU is run without a password.
                self.phase = if *p.first()? == 1 {
                    Phase::ClientInit
                } else {
                    Phase::Lost
                };
                Some(1)
            }
            Phase::ClientInit => {
                p.first()?;
                self.phase = Phase::Messages;
                Some(1)
            }
            Phase::Messages => {
                let len = match message_len(p) {
                    Length::Known(len) => len,
                    Length::NeedMore => return None,
                    Length::Unknown => {
                        self.phase = Phase::Lost;
                        return None;
                    }
                };
                (p.len() >= len).then_some(len)
            }
        }
    }
}

enum Length {
    Known(usize),
    NeedMore,
    Unknown,
}

/// The length of the client message at the start of `p`.
fn message_len(p: &[u8]) -> Length {
    let Some(&kind) = p.first() else {
        return Length::NeedMore;
    };
    let u16_at = |i: usize| {
        p.get(i..i + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    };
    let u32_at = |i: usize| {
        p.get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let known = |len: Option<usize>| len.map_or(Length::NeedMore, Length::Known);
    match kind {
        0 => Length::Known(20),                                   // SetPixelFormat
        2 => known(u16_at(2).map(|n| 4 + 4 * n)),                 // SetEncodings
        3 => Length::Known(10),                                   // FramebufferUpdateRequest
        4 => Length::Known(8),                                    // KeyEvent
        5 => Length::Known(6),                                    // PointerEvent
        6 => known(u32_at(4).map(|n| 8usize.saturating_add(n))),  // ClientCutText
        150 => Length::Known(10),                                 // EnableContinuousUpdates
        251 => known(p.get(6).map(|n| 8 + 16 * usize::from(*n))), // SetDesktopSize
        255 => match p.get(1) {
            None => Length::NeedMore,
            Some(0) => Length::Known(12), // QEMU extended key event
            Some(1) => match u16_at(2) {
                None => Length::NeedMore,
                Some(2) => Length::Known(10), // QEMU audio: set format
                Some(_) => Length::Known(4),  // QEMU audio: enable, disable
            },
            Some(_) => Length::Unknown,
        },
        _ => Length::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_becomes_pointer_and_key_events() {
        assert_eq!(pointer_event(640, 3, 0b101), [5, 5, 2, 128, 0, 3]);
        assert_eq!(key_event(true, 0xff0d), [4, 1, 0, 0, 0, 0, 0xff, 0x0d]);
        assert_eq!(key_event(false, 0x61), [4, 0, 0, 0, 0, 0, 0, 0x61]);
    }

    #[test]
    fn keys_are_named_as_browsers_name_them() {
        assert_eq!(keysym("a"), Some(0x61));
        assert_eq!(keysym("Enter"), Some(0xff0d));
        assert_eq!(keysym("F1"), Some(0xffbe));
        assert_eq!(keysym("F12"), Some(0xffc9));
        assert_eq!(keysym("é"), Some(0xe9));
        assert_eq!(keysym("€"), Some(0x0100_20ac));
        assert_eq!(keysym("F13"), None);
        assert_eq!(keysym("Hyper"), None);
        assert_eq!(keysym("\n"), None);
    }

    #[test]
    fn the_server_may_speak_only_after_client_init_and_between_messages() {
        let mut client = ClientStream::default();
        assert!(!client.between_messages());
        client.feed(b"RFB 003.008\n");
        client.feed(&[1]);
        assert!(!client.between_messages(), "ClientInit not sent yet");
        client.feed(&[1]);
        assert!(client.between_messages());
        let mut update = vec![3, 0, 0, 0, 0, 0];
        client.feed(&update[..3]);
        assert!(!client.between_messages(), "half a message");
        client.feed(&update.split_off(3));
        client.feed(&[0, 100, 0, 100]);
        assert!(client.between_messages());
        client.feed(&[2, 0, 0, 2, 0, 0, 0, 0]);
        assert!(!client.between_messages(), "SetEncodings lists 2 encodings");
        client.feed(&[0, 0, 0, 1]);
        assert!(client.between_messages());
    }

    #[test]
    fn a_3_3_client_sends_no_security_choice() {
        let mut client = ClientStream::default();
        client.feed(b"RFB 003.003\n");
        client.feed(&[1]);
        assert!(client.between_messages());
    }

    #[test]
    fn an_unknown_message_loses_the_stream_for_good() {
        let mut client = ClientStream::default();
        client.feed(b"RFB 003.008\n\x01\x01");
        client.feed(&[77, 0, 0]);
        assert!(!client.between_messages());
        client.feed(&pointer_event(1, 1, 0));
        assert!(!client.between_messages());
    }
}
