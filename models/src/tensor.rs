//! Tensors between functions: raw little-endian f32, shape known to both
//! ends (the model's input and output facts).

use crate::ModelError;

/// `values` as little-endian bytes.
#[must_use]
pub fn to_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian bytes as f32 values.
pub fn from_bytes(bytes: &[u8]) -> Result<Vec<f32>, ModelError> {
    if bytes.len() % 4 != 0 {
        return Err(ModelError::BadArgs(format!(
            "a tensor is a multiple of 4 bytes (f32), not {}",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// The element-wise mean of equally long tensors.
pub fn average(tensors: &[&[u8]]) -> Result<Vec<u8>, ModelError> {
    let Some(first) = tensors.first() else {
        return Err(ModelError::BadArgs(
            "average needs at least one tensor".into(),
        ));
    };
    let mut sum = vec![0f32; first.len() / 4];
    for t in tensors {
        if t.len() != first.len() {
            return Err(ModelError::BadArgs(format!(
                "average needs tensors of one size; got {} and {} bytes",
                first.len(),
                t.len()
            )));
        }
        for (s, v) in sum.iter_mut().zip(from_bytes(t)?) {
            *s += v;
        }
    }
    let n = tensors.len() as f32;
    sum.iter_mut().for_each(|s| *s /= n);
    Ok(to_bytes(&sum))
}

/// One ranked class.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranked<'a> {
    pub class: usize,
    pub probability: f32,
    pub label: &'a str,
}

/// Class labels from `index,label` lines (split on the first comma, since
/// labels contain commas); index `i` must be on line `i`.
pub fn parse_labels(text: &str) -> Result<Vec<&str>, ModelError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| match line.split_once(',') {
            Some((idx, label)) if idx.trim().parse() == Ok(i) => Ok(label.trim()),
            _ => Err(ModelError::BadArgs(format!(
                "labels line {}: expected `{i},<label>`, got {line:?}",
                i + 1
            ))),
        })
        .collect()
}

/// The `k` most probable classes, best first (ties: lower class first).
pub fn top_k<'a>(
    probabilities: &[f32],
    labels: &[&'a str],
    k: usize,
) -> Result<Vec<Ranked<'a>>, ModelError> {
    if labels.len() != probabilities.len() {
        return Err(ModelError::BadArgs(format!(
            "{} labels for {} classes",
            labels.len(),
            probabilities.len()
        )));
    }
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    order.sort_by(|&a, &b| {
        probabilities[b]
            .total_cmp(&probabilities[a])
            .then(a.cmp(&b))
    });
    Ok(order
        .into_iter()
        .take(k)
        .map(|class| Ranked {
            class,
            probability: probabilities[class],
            label: labels[class],
        })
        .collect())
}

/// `class<TAB>probability<TAB>label` lines: what `top5` returns.
#[must_use]
pub fn format_ranked(ranked: &[Ranked<'_>]) -> String {
    ranked
        .iter()
        .map(|r| format!("{}\t{:.6}\t{}\n", r.class, r.probability, r.label))
        .collect()
}

/// Reads [`format_ranked`] output back: (class, probability, label).
pub fn parse_ranked(text: &str) -> Result<Vec<(usize, f64, String)>, ModelError> {
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(3, '\t');
            let (Some(c), Some(p), Some(l)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(ModelError::BadArgs(format!("not a ranked class: {line:?}")));
            };
            match (c.parse(), p.parse()) {
                (Ok(c), Ok(p)) => Ok((c, p, l.to_owned())),
                _ => Err(ModelError::BadArgs(format!("not a ranked class: {line:?}"))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_odd_lengths_are_refused() {
        let v = [1.5f32, -2.0, 0.25];
        assert_eq!(from_bytes(&to_bytes(&v)).unwrap(), v);
        assert!(from_bytes(&[0; 5]).is_err());
    }

    #[test]
    fn average_is_elementwise_and_checks_sizes() {
        let a = to_bytes(&[1.0, 2.0]);
        let b = to_bytes(&[3.0, 6.0]);
        assert_eq!(
            from_bytes(&average(&[&a, &b]).unwrap()).unwrap(),
            [2.0, 4.0]
        );
        assert!(average(&[&a, &to_bytes(&[1.0])]).is_err());
        assert!(average(&[]).is_err());
    }

    #[test]
    fn top_k_ranks_with_labels_split_on_the_first_comma() {
        let labels =
            parse_labels("0,tench, Tinca tinca\n1,goldfish\n2,tabby, tabby cat\n").unwrap();
        assert_eq!(
            labels,
            ["tench, Tinca tinca", "goldfish", "tabby, tabby cat"]
        );
        let ranked = top_k(&[0.2, 0.1, 0.7], &labels, 2).unwrap();
        assert_eq!(ranked[0].class, 2);
        assert_eq!(ranked[1].label, "tench, Tinca tinca");
        let text = format_ranked(&ranked);
        assert_eq!(
            parse_ranked(&text).unwrap()[0],
            (2, 0.7, "tabby, tabby cat".into())
        );
        assert!(top_k(&[0.5], &labels, 1).is_err());
        assert!(parse_labels("1,x\n").is_err());
    }
}
