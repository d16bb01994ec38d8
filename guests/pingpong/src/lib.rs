//! `pingpong send DEST TEXT` sends TEXT to executor DEST and returns
//! `direct` or `inbox`; `pingpong recv` returns the waiting messages as
//! `FROM:TEXT` lines, or fails if there are none.
use squall_guest::{export, recv, send, text_arg, Delivery, Error};

fn pingpong(args: &[Vec<u8>]) -> Result<Vec<u8>, Error> {
    match text_arg(args, 0)? {
        "send" => {
            let dest: u64 = text_arg(args, 1)?
                .parse()
                .map_err(|_| Error::failed("DEST is an executor id"))?;
            let text = args
                .get(2)
                .ok_or_else(|| Error::failed("send needs TEXT"))?;
            Ok(match send(dest, text) {
                Delivery::Direct => b"direct".to_vec(),
                Delivery::Inbox => b"inbox".to_vec(),
            })
        }
        "recv" => {
            let got = recv();
            if got.is_empty() {
                return Err(Error::failed("no message"));
            }
            let lines: Vec<String> = got
                .iter()
                .map(|m| format!("{}:{}", m.from, String::from_utf8_lossy(&m.bytes)))
                .collect();
            Ok(lines.join("\n").into_bytes())
        }
        other => Err(Error::failed(format!("send or recv, not {other:?}"))),
    }
}

export!(pingpong);
