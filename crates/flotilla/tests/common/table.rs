//! Reads the docker CLI's tables (`service ls`, `service ps`, `node ls`).
//! Columns are aligned by a tab writer, so each header's offset in the
//! header line is where that column starts in every row; cells may hold
//! single spaces ("Running 5 seconds ago") or be empty.

#[derive(Debug)]
pub struct Table {
    pub header: String,
    columns: Vec<(String, usize)>,
    pub rows: Vec<String>,
}

impl Table {
    #[track_caller]
    pub fn parse(stdout: &str) -> Table {
        let mut lines = stdout.lines().filter(|l| !l.trim().is_empty());
        let header = lines.next().expect("a table has a header").to_string();
        let mut columns = Vec::new();
        let mut start = None;
        let bytes = header.as_bytes();
        for i in 0..=bytes.len() {
            let space = i == bytes.len() || bytes[i] == b' ';
            // A column name ends at two spaces (names have single ones).
            let gap = space && (i + 1 >= bytes.len() || bytes[i + 1] == b' ');
            match (start, gap) {
                (None, false) if !space => start = Some(i),
                (Some(s), true) => {
                    columns.push((header[s..i].to_string(), s));
                    start = None;
                }
                _ => {}
            }
        }
        Table {
            header,
            columns,
            rows: lines.map(String::from).collect(),
        }
    }

    pub fn column_names(&self) -> Vec<&str> {
        self.columns.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The cell of `row` under `column`, trimmed.
    #[track_caller]
    pub fn cell<'a>(&self, row: &'a str, column: &str) -> &'a str {
        let i = self
            .columns
            .iter()
            .position(|(n, _)| n == column)
            .unwrap_or_else(|| panic!("no column {column} in {:?}", self.header));
        let from = self.columns[i].1.min(row.len());
        let to = self
            .columns
            .get(i + 1)
            .map_or(row.len(), |c| c.1.min(row.len()));
        row[from..to].trim()
    }

    /// Every row's cell under `column`.
    pub fn column(&self, column: &str) -> Vec<&str> {
        self.rows.iter().map(|r| self.cell(r, column)).collect()
    }
}
