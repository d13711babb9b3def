//! CIFAR-10 in its binary format (`data_batch_1.bin` … `data_batch_5.bin`,
//! `test_batch.bin`: records of 1 label byte and 3,072 pixel bytes, channel-major), and a
//! learnable synthetic dataset written in the same format.

use std::fmt;
use std::path::{Path, PathBuf};

use rand::{rngs::StdRng, Rng, SeedableRng};

pub const RECORD: usize = 3073;
pub const PIXELS: usize = 3072;
pub const CLASSES: usize = 10;
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
pub const TEST_FILE: &str = "test_batch.bin";
pub const CLASS_NAMES: [&str; CLASSES] = [
    "plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
];

/// What is wrong with the data, said so that the user can fix it.
#[derive(Debug)]
pub enum DataError {
    Missing { dir: PathBuf, file: &'static str },
    Corrupt { file: PathBuf, why: String },
    Io { file: PathBuf, err: std::io::Error },
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::Missing { dir, file } => write!(
                f,
                "CIFAR-10 not found: {} has no {file}. Put the binary version there \
                 (data_batch_1.bin … data_batch_5.bin and test_batch.bin): download \
                 https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz and run \
                 `tar xzf cifar-10-binary.tar.gz -C <parent of {}>`; or pass --synthetic to \
                 generate a learnable stand-in in that directory",
                dir.display(),
                dir.file_name()
                    .map_or("cifar-10-batches-bin".into(), |n| n.to_string_lossy())
            ),
            DataError::Corrupt { file, why } => {
                write!(f, "{} is not a valid CIFAR-10 batch: {why}", file.display())
            }
            DataError::Io { file, err } => write!(f, "cannot read {}: {err}", file.display()),
        }
    }
}

impl std::error::Error for DataError {}

/// Images (u8, channel-major, 3×32×32 each) and their labels.
#[derive(Debug, Clone, Default)]
pub struct Images {
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Images {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Pixels of image `i`, normalised to [-1, 1] as the seed's
    /// `Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))` after `ToTensor`.
    pub fn normalised(&self, i: usize, out: &mut Vec<f32>) {
        out.extend(
            self.pixels[i * PIXELS..(i + 1) * PIXELS]
                .iter()
                .map(|&p| p as f32 / 127.5 - 1.0),
        );
    }
}

/// Reads one batch file.
pub fn read_batch(file: &Path) -> Result<Images, DataError> {
    let data = std::fs::read(file).map_err(|err| DataError::Io {
        file: file.to_path_buf(),
        err,
    })?;
    if data.is_empty() || !data.len().is_multiple_of(RECORD) {
        return Err(DataError::Corrupt {
            file: file.to_path_buf(),
            why: format!(
                "{} bytes is not a whole number of 3,073-byte records (truncated?)",
                data.len()
            ),
        });
    }
    let n = data.len() / RECORD;
    let mut out = Images {
        pixels: Vec::with_capacity(n * PIXELS),
        labels: Vec::with_capacity(n),
    };
    for (k, rec) in data.chunks_exact(RECORD).enumerate() {
        if rec[0] as usize >= CLASSES {
            return Err(DataError::Corrupt {
                file: file.to_path_buf(),
                why: format!("record {k} has label {} (labels are 0 to 9)", rec[0]),
            });
        }
        out.labels.push(rec[0]);
        out.pixels.extend_from_slice(&rec[1..]);
    }
    Ok(out)
}

fn require(dir: &Path, file: &'static str) -> Result<PathBuf, DataError> {
    let p = dir.join(file);
    if p.is_file() {
        Ok(p)
    } else {
        Err(DataError::Missing {
            dir: dir.to_path_buf(),
            file,
        })
    }
}

/// Checks that every file is there and holds whole records (before any trial starts).
pub fn check_dir(dir: &Path) -> Result<(), DataError> {
    for f in TRAIN_FILES.iter().chain([&TEST_FILE]) {
        let p = require(dir, f)?;
        let len = std::fs::metadata(&p)
            .map_err(|err| DataError::Io {
                file: p.clone(),
                err,
            })?
            .len() as usize;
        if len == 0 || !len.is_multiple_of(RECORD) {
            return Err(DataError::Corrupt {
                file: p,
                why: format!(
                    "{len} bytes is not a whole number of 3,073-byte records (truncated?)"
                ),
            });
        }
    }
    Ok(())
}

/// The 5 training batches, concatenated.
pub fn load_train(dir: &Path) -> Result<Images, DataError> {
    let mut all = Images::default();
    for f in TRAIN_FILES {
        let b = read_batch(&require(dir, f)?)?;
        all.pixels.extend_from_slice(&b.pixels);
        all.labels.extend_from_slice(&b.labels);
    }
    Ok(all)
}

pub fn load_test(dir: &Path) -> Result<Images, DataError> {
    read_batch(&require(dir, TEST_FILE)?)
}

/// Does `dir` hold a dataset (any of its files)?
pub fn has_any(dir: &Path) -> bool {
    TRAIN_FILES
        .iter()
        .chain([&TEST_FILE])
        .any(|f| dir.join(f).exists())
}

/// Writes a synthetic dataset in the CIFAR-10 binary format: each class is a distinct
/// pattern (a colour and a stripe direction and frequency) plus per-pixel noise, and a
/// quarter of the labels are random, so a small CNN learns it within an epoch or two
/// to an accuracy near 0.78 (chance: 0.1). `per_file` images in each training batch
/// file, `test` in the test file.
pub fn write_synthetic(dir: &Path, per_file: usize, test: usize, seed: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut write = |name: &str, n: usize| -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(n * RECORD);
        for _ in 0..n {
            let class = rng.random_range(0..CLASSES);
            // A quarter of the labels are wrong, as real data is noisy: the best
            // possible accuracy is about 0.78, so configs differ visibly.
            let label = if rng.random::<f32>() < 0.25 {
                rng.random_range(0..CLASSES)
            } else {
                class
            };
            buf.push(label as u8);
            let colour = [
                (class * 53 % 256) as f32,
                (class * 101 % 256) as f32,
                (class * 197 % 256) as f32,
            ];
            let freq = 1.0 + (class % 5) as f32;
            let vertical = class >= 5;
            let shift = rng.random_range(0.0..std::f32::consts::TAU);
            for base in colour.iter() {
                for y in 0..32 {
                    for x in 0..32 {
                        let t = if vertical { x } else { y } as f32;
                        let stripe = (t / 32.0 * freq * std::f32::consts::TAU + shift).sin();
                        let noise = rng.random_range(-90.0..90.0);
                        let v = base * 0.2 + 100.0 + 25.0 * stripe + noise;
                        buf.push(v.clamp(0.0, 255.0) as u8);
                    }
                }
            }
        }
        // Written whole then renamed, so a reader never sees half a file.
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, &buf)?;
        std::fs::rename(&tmp, dir.join(name))
    };
    for f in TRAIN_FILES {
        write(f, per_file)?;
    }
    write(TEST_FILE, test)?;
    std::fs::write(dir.join("batches.meta.txt"), CLASS_NAMES.join("\n") + "\n")?;
    std::fs::write(
        dir.join("SYNTHETIC"),
        "Synthetic stand-in for CIFAR-10 written by sunray-cifar (not the real dataset).\n",
    )
}

/// Indices of `n` training images split 80/20 into (train, validation), shuffled by
/// `seed`, as the seed's `random_split`.
pub fn split(n: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    for i in (1..n).rev() {
        idx.swap(i, rng.random_range(0..=i));
    }
    let cut = n * 8 / 10;
    let val = idx.split_off(cut);
    (idx, val)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("cifar-data-{tag}-{}", std::process::id()));
        std::fs::remove_dir_all(&p).ok();
        p
    }

    #[test]
    fn synthetic_files_read_back_in_the_cifar_format() {
        let d = tmp("rt");
        write_synthetic(&d, 20, 10, 1).unwrap();
        check_dir(&d).unwrap();
        let train = load_train(&d).unwrap();
        assert_eq!(train.len(), 100);
        assert_eq!(train.pixels.len(), 100 * PIXELS);
        assert_eq!(
            std::fs::metadata(d.join(TEST_FILE)).unwrap().len(),
            10 * RECORD as u64
        );
        let mut v = Vec::new();
        train.normalised(0, &mut v);
        assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn missing_truncated_and_corrupt_files_are_named() {
        let d = tmp("bad");
        let e = load_train(&d).unwrap_err().to_string();
        assert!(
            e.contains("data_batch_1.bin")
                && e.contains("--synthetic")
                && e.contains("cifar-10-binary.tar.gz"),
            "{e}"
        );
        write_synthetic(&d, 5, 5, 1).unwrap();
        let f = d.join("data_batch_3.bin");
        let mut bytes = std::fs::read(&f).unwrap();
        bytes.truncate(bytes.len() - 100);
        std::fs::write(&f, &bytes).unwrap();
        let e = load_train(&d).unwrap_err().to_string();
        assert!(
            e.contains("data_batch_3.bin") && e.contains("truncated"),
            "{e}"
        );
        bytes.truncate(RECORD);
        bytes[0] = 42;
        std::fs::write(&f, &bytes).unwrap();
        let e = load_train(&d).unwrap_err().to_string();
        assert!(
            e.contains("data_batch_3.bin") && e.contains("label 42"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn the_split_is_80_20_disjoint_and_seeded() {
        let (a, b) = split(1000, 7);
        assert_eq!((a.len(), b.len()), (800, 200));
        let mut all: Vec<usize> = a.iter().chain(&b).copied().collect();
        all.sort();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        assert_eq!(split(1000, 7), (a, b));
        assert_ne!(split(1000, 8).0, split(1000, 7).0);
    }
}
