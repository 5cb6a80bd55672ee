"""Adds the items of feature files that a serving bundle lacks, without training or rebuilding.

  python -m experiments.add_items --bundle=bundles/ml --item_content_path=new_content.npy \
    --item_side_path=new_items.csv

The files have the layouts of unipinrec/data/item_feature_files.py and the columns the model was
trained on (the bundle's features.json names them). Items whose ids the bundle already has are
skipped; the others are encoded with the bundle's exported item encoder, added to its usearch
index and written as a new bundle version (unipinrec/export/add_items.py), which a running
server loads on POST /admin/reload. A model with an id table (item_id_part='table') is refused.
"""

from absl import flags, logging

from experiments import cli, launch
from unipinrec.export.add_items import add_items

_BUNDLE = flags.DEFINE_string(
  "bundle", None, "A serving bundle directory (python -m experiments.export).", required=True
)
_CONTENT = flags.DEFINE_string(
  "item_content_path", "", "Content vectors of the new items: .npy, .parquet or CSV."
)
_SIDE = flags.DEFINE_string(
  "item_side_path", "", "Side features of the new items: CSV with a header line, or .parquet."
)


def main(argv):
  del argv
  if not _CONTENT.value and not _SIDE.value:
    raise cli.CommandLineError("give --item_content_path, --item_side_path or both")
  launch.prepare_process()
  path = add_items(_BUNDLE.value, _CONTENT.value, _SIDE.value)
  logging.info("serving bundle version %s", path)


if __name__ == "__main__":
  cli.run(main)
