"""Shadow pairs where the student disagreed: browse, search, download for the next distillation
round."""

from __future__ import annotations

import streamlit as st

from kdroute.review import quality
from sections import data


def render(path: str, scope, newest) -> None:
    if newest.empty:
        st.info("No disagreements in this range (or no shadow evaluations yet).")
        return
    left, right = st.columns([2, 1])
    search = left.text_input("Search prompts and answers", key="dis_search")
    methods = sorted(m for m in newest["method"].dropna().unique())
    chosen = right.multiselect("Method", methods, default=[], key="dis_method",
                               placeholder="all")
    shown = newest
    if chosen:
        shown = shown[shown["method"].isin(chosen)]
    if search:
        text = (shown["prompt_text"].fillna("") + "\n" + shown["student_response"].fillna("")
                + "\n" + shown["teacher_response"].fillna(""))
        shown = shown[text.str.contains(search, case=False, regex=False)]
    st.caption(f"{len(shown):,} of the newest {len(newest):,} disagreements shown.")
    st.dataframe(
        shown[["ts", "slice", "kind", "method", "score", "router_score", "prompt_text",
               "student_response", "teacher_response"]].rename(columns={
                   "prompt_text": "prompt", "student_response": "student",
                   "teacher_response": "teacher"}),
        hide_index=True, column_config={"prompt": st.column_config.TextColumn(width="large")})
    st.download_button(
        "Download all disagreements in range as distillation JSONL",
        data=lambda: quality.distill_jsonl(data.all_disagreements(path, scope))[0],
        file_name="kdroute-disagreements.jsonl", mime="application/jsonl", key="dis_download",
        help="prompt/response rows (the teacher's answer) that `kdroute distill --data FILE` "
             "reads; rows without stored text are left out")
