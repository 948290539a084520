//! Random service names like Docker's (`adjective_surname`), for
//! `service create` without `--name`.

use rand::seq::IndexedRandom;

const LEFT: &[&str] = &[
    "admiring",
    "bold",
    "brave",
    "busy",
    "clever",
    "cool",
    "dazzling",
    "eager",
    "elastic",
    "epic",
    "focused",
    "gallant",
    "gifted",
    "happy",
    "hopeful",
    "jolly",
    "keen",
    "kind",
    "loving",
    "modest",
    "nifty",
    "optimistic",
    "quirky",
    "relaxed",
    "serene",
    "sharp",
    "stoic",
    "tender",
    "upbeat",
    "vibrant",
    "wizardly",
    "zealous",
];

const RIGHT: &[&str] = &[
    "albattani",
    "babbage",
    "bohr",
    "curie",
    "darwin",
    "dijkstra",
    "einstein",
    "euler",
    "faraday",
    "fermi",
    "galileo",
    "gauss",
    "hopper",
    "hypatia",
    "kepler",
    "knuth",
    "lamport",
    "lovelace",
    "meitner",
    "newton",
    "noether",
    "pascal",
    "ritchie",
    "shannon",
    "tesla",
    "thompson",
    "turing",
    "wozniak",
];

pub fn random_name() -> String {
    let mut rng = rand::rng();
    let l = LEFT.choose(&mut rng).copied().unwrap_or("brave");
    let r = RIGHT.choose(&mut rng).copied().unwrap_or("turing");
    format!("{l}_{r}")
}
