//! `wordcount KEY...`: counts the words of the LWW text values at the given
//! keys; records each key's count under `wc:KEY` (a max lattice) and returns
//! the total. Missing keys count zero; a key of another lattice type fails
//! the call, naming its type.
use squall_guest::{export, get_bytes, put, Error, Value};

fn wordcount(args: &[Vec<u8>]) -> Result<Vec<u8>, Error> {
    let mut total = 0u64;
    for key in args {
        let n = get_bytes(key)?.map_or(0, |text| {
            String::from_utf8_lossy(&text).split_whitespace().count() as u64
        });
        put(&[b"wc:".as_slice(), key].concat(), &Value::Max(n));
        total += n;
    }
    Ok(total.to_string().into_bytes())
}

export!(wordcount);
