print("raha")
