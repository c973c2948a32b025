"""TURN Studio's Streamlit side: thin pages that start jobs, read run folders and draw."""
