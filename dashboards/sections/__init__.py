"""The dashboard's sections: layout only. Figures come from `kdroute.review`, data from the
cached loaders in `data`."""
