"""Label recipes: read each public dataset's own published label files into a LabelTable."""
